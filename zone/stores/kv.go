// Package stores holds what the hub's and the device's bbolt stores have
// in common: CBOR values and key encodings, the schema version, the zone
// state's epoch proofs (signed by the hub, checked by the devices), the
// envelope replay memory kept on disk (zone/envelope's Store), and the
// offline compaction of store files (pzh/pzp compact). Each runtime's own
// buckets and records live with that runtime.
package stores

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/transport"
)

// StoreVersion is the on-disk format version of both stores; a store with
// a newer version is refused rather than misread.
const StoreVersion = 1

// LockTimeout is how long opening a store waits for bbolt's file lock
// before concluding another daemon holds it.
const LockTimeout = time.Second

var (
	BucketMeta = []byte("meta")
)

var (
	KeyVersion  = []byte("version")
	KeyZoneInfo = []byte("zone")
)

func SerialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

var ErrNotFound = errors.New("not found")

func PutCBOR(b kv.Bucket, k []byte, v any) error {
	data, err := transport.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

func GetCBOR(b kv.Bucket, k []byte, v any) error {
	data := b.Get(k)
	if data == nil {
		return ErrNotFound
	}
	if err := transport.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %q: %w", k, err)
	}
	return nil
}

func Clone(b []byte) []byte { return append([]byte(nil), b...) }

func MarshalKey(k ed25519.PrivateKey) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }

func ParseKey(der []byte) (ed25519.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want Ed25519", k)
	}
	return ek, nil
}

// SyncDir makes a rename in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
