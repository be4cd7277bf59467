#!/usr/bin/perl
# A form that POSTs to itself and shows what arrived on stdin.
use strict;
use warnings;

sub escape_html {
    my ($text) = @_;
    $text =~ s/&/&amp;/g; $text =~ s/</&lt;/g; $text =~ s/>/&gt;/g; $text =~ s/"/&quot;/g;
    return $text;
}

sub url_decode {
    my ($text) = @_;
    $text =~ tr/+/ /;
    $text =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
    return $text;
}

my $method = $ENV{REQUEST_METHOD} || 'GET';
my %fields;
if ($method eq 'POST') {
    my $length = $ENV{CONTENT_LENGTH} || 0;
    my $body = '';
    read(STDIN, $body, $length) if $length > 0;
    for my $pair (split /&/, $body) {
        my ($name, $value) = split /=/, $pair, 2;
        $fields{url_decode($name // '')} = url_decode($value // '');
    }
}

print "Content-Type: text/html; charset=utf-8\r\n\r\n";
print "<!DOCTYPE html>\n<html><head><title>form.pl</title></head><body>\n";
print "<h1>A CGI form in Perl</h1>\n";
if (%fields) {
    print "<p>You sent (", escape_html($ENV{CONTENT_LENGTH}), " bytes):</p><ul>\n";
    for my $name (sort keys %fields) {
        print "<li><b>", escape_html($name), "</b>: ", escape_html($fields{$name}), "</li>\n";
    }
    print "</ul>\n";
}
print qq{<form method="post" action="$ENV{SCRIPT_NAME}">\n};
print qq{<label>Name <input name="name"></label> <label>Message <input name="message"></label> <button>Send</button>\n</form>\n};
print qq{<p><a href="/">back</a></p></body></html>\n};
