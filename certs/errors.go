package certs

import "errors"

var (
	// ErrExpired: the certificate is past NotAfter beyond any grace period.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: the certificate's NotBefore is in the future.
	ErrNotYetValid = errors.New("certificate not yet valid")
	// ErrWrongZone: the certificate was not issued by the expected zone CA.
	ErrWrongZone = errors.New("certificate is not from this zone")
	// ErrBadZoneID: a zone ID failed to parse or its check character is wrong.
	ErrBadZoneID = errors.New("malformed zone ID")
)
