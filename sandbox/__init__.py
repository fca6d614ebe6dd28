"""Loopback sandboxes that speak the real Exchange (EWS) and Salesforce wire protocols."""
