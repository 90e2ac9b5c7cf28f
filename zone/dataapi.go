package zone

// The data endpoints of the local API: read, write, list and watch the
// zone's replicated store. Hub and peer serve the same endpoints; the hub
// writes as zsync.HubNode, a peer as its device. See docs/PROTOCOL.md,
// "Data endpoints".
