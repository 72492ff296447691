"""What is sent: campaign files and the content library, read and validated."""
