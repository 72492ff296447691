"""What goes out: a planned touch composed, rendered and handed to the mail server."""
