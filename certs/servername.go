package certs

import (
	"strconv"
	"strings"
)

// The TLS server names (SNI) nodes send to a hub. A hub that serves one
// zone ignores them; a provider, which serves many zones on one listener,
// routes each connection to its zone by them before it reads anything
// else (docs/PROTOCOL.md "Server names"). They are under .invalid
// (RFC 2606), so no resolver or public CA ever has them; trust still
// comes from pinning the zone ID, never from the name.
const (
	serverNameSuffix = ".pzone.invalid"
	// codeNameSuffix names a short code's invite number: a device or hub
	// with a code does not know the zone yet.
	codeNameSuffix = ".code" + serverNameSuffix
	// LegacyServerName is the name nodes sent before server names named
	// zones; a provider refuses it, saying what to update.
	LegacyServerName = "pzone-hub"
)

// ServerName is the server name that names zone z: its compact ID in
// lower case, one DNS label of 33 characters.
func ServerName(z ZoneID) string {
	return strings.ToLower(z.Compact()) + serverNameSuffix
}

// CodeServerName is the server name of a short code's invite number n.
func CodeServerName(n uint32) string {
	return "n" + strconv.FormatUint(uint64(n), 10) + codeNameSuffix
}

// ParseServerName reads a server name: the zone it names, or a code's
// invite number (code true). ok is false for any other name.
func ParseServerName(name string) (z ZoneID, n uint32, code, ok bool) {
	name = strings.ToLower(name)
	if rest, found := strings.CutSuffix(name, codeNameSuffix); found {
		digits, ok := strings.CutPrefix(rest, "n")
		v, err := strconv.ParseUint(digits, 10, 32)
		if !ok || err != nil || v == 0 || strconv.FormatUint(v, 10) != digits {
			return "", 0, false, false
		}
		return "", uint32(v), true, true
	}
	label, found := strings.CutSuffix(name, serverNameSuffix)
	if !found || len(label) != zoneIDCompactLen {
		return "", 0, false, false
	}
	id, err := ParseZoneID(label)
	if err != nil {
		return "", 0, false, false
	}
	return id, 0, false, true
}
