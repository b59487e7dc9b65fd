"""Work that waits in rows: due rows leased and worked by loops, singleton leases."""
