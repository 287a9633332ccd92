class ProtocolError(ValueError):
    """Input that does not follow the wire protocol; the message says what was wrong."""
