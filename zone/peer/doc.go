// Package peer is the device runtime (pzp run): it keeps one session with
// the zone's hub (QUIC, or TLS+yamux over TCP), syncs the zone state,
// serves and places apps' calls, holds direct paths to other devices,
// sleeps and is woken, and answers the device's local API socket for apps
// and the CLI. Pairing's result is saved with SavePairing; Run starts it.
//
// The vocabulary it speaks is package zone/wire (and docs/PROTOCOL.md);
// the pure logic it shares with the hub is zone/policy, zone/envelope and
// zone/token. It never imports the hub runtime (zone/hub); only its tests
// do, to run hubs for devices to talk to.
package peer
