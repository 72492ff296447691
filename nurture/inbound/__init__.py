"""What comes back: replies, out-of-office notices, bounces and complaints."""
