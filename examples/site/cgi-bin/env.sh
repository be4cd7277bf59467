#!/bin/sh
# Prints the CGI/1.1 environment the script was given, sorted.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
echo "CGI environment of $SCRIPT_NAME (PATH_INFO=$PATH_INFO, QUERY_STRING=$QUERY_STRING):"
echo
env | LC_ALL=C sort
