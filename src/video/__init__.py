"""Colouring video: reading and writing it (streams), shot cuts (shots), colour carried along the motion (temporal)
and the two put together (film)."""
