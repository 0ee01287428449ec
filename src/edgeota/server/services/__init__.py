"""Domain services: plain functions over a Session; the routers stay thin."""
