"""Runnable examples: the reference GW2 service and local stand-ins for its upstream APIs."""
