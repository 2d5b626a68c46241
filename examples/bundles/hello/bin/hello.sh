#!/bin/sh
# Prints a greeting as the step's JSON outputs.
printf '{"greeting": "hello from a bundle"}\n'
