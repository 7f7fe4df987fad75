"""The request path of one worker process: from accepted connection to the app and back
(docs/architecture.md follows one request through it). state.py is the bottom; worker.py the top."""
