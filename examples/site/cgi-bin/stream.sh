#!/bin/sh
# Streams its output: gatehouse passes each line on as the script writes it.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
for i in 1 2 3 4 5; do
  echo "line $i of 5 at $(date +%T)"
  sleep 1
done
