"""One module per lesson, each registering that lesson's exercises."""
