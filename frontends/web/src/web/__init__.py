"""The travellers' website: server-rendered pages that take a traveller through the accounts API."""
