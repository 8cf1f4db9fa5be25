"""One thin module per instrumented library; each receives the providers it uses."""
