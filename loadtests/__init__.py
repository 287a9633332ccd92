"""Load tests against real daemons: many guests, many destinations, HTTP load (Locust).

See loadtests/README.md."""
