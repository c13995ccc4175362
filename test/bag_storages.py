"""The bag storages the bag tests run in (each such test once per storage) and the file each writes; not a test
module."""

STORAGES = ["mcap", "sqlite3"]
STORAGE_FILE = {"mcap": "*.mcap", "sqlite3": "*.db3"}
