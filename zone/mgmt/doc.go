// Package mgmt is the hub's management plane behind its web dashboard and
// HTTP API: operator accounts (a password hashed with argon2id, TOTP as
// second factor, recovery codes), their API sessions (partially
// authenticated until the TOTP query is answered, an idle timeout reset by
// activity, an absolute lifetime, logout, removal by an administrator that
// takes the session's children and live streams with it), API tokens for
// scripts, and the back-off of failed logins.
//
// It keeps its records in buckets of the hub's own bbolt file and knows
// nothing of HTTP: zone/web serves it, the hub's admin socket manages it.
// Secrets (session ids, token secrets, recovery codes) are never stored,
// only their SHA-256: each has 128 bits or more of randomness, which a
// fast hash protects; passwords, chosen by people, get the memory-hard one.
package mgmt
