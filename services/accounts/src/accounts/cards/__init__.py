"""Cards: the inventory, binding a card to its holder, and a card's plans and status."""
