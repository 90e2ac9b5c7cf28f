// Package backup is the file format of a hub's backup (pzh backup): the
// hub's stores, each a consistent bbolt snapshot, in one file with a
// format version and checksums, so that a restore can refuse a file that
// is damaged, cut short, of a newer format, or not a backup at all before
// it writes anything into place. docs/PROTOCOL.md §10 describes it.
//
//	"PZBACKUP"                      8 bytes
//	frame: Header
//	for each of Header.Files, in order:
//	    frame: fileHeader           name and size
//	    the file's bytes
//	    SHA-256 of them             32 bytes
//	frame: trailer                  the number of files again
//	SHA-256 of every byte above     32 bytes
//
// A frame is transport's: a uvarint length, then canonical CBOR.
package backup

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/pzone/pzone/transport"
)

// Magic starts every backup file.
const Magic = "PZBACKUP"

// FormatVersion is the format this package writes and reads.
const FormatVersion = 1

// maxHeader bounds a frame of the file.
const maxHeader = 16 << 10

// maxFiles bounds the stores one backup holds.
const maxFiles = 16

// Header describes a backup.
type Header struct {
	Version  int       `cbor:"1,keyasint"`
	Zone     string    `cbor:"2,keyasint"`
	ZoneID   string    `cbor:"3,keyasint"`
	Created  time.Time `cbor:"4,keyasint"`
	Software string    `cbor:"5,keyasint,omitempty"`
	Files    []string  `cbor:"6,keyasint"`
}

type fileHeader struct {
	Name string `cbor:"1,keyasint"`
	Size int64  `cbor:"2,keyasint"`
}

type trailer struct {
	Files int `cbor:"1,keyasint"`
}

// Source is one store to back up: its name in the file, and a snapshot
// of Size bytes that WriteTo writes (a bbolt read transaction's).
type Source struct {
	Name    string
	Size    int64
	WriteTo func(io.Writer) (int64, error)
}

// Errors a reader reports; each comes wrapped with what was wrong.
var (
	ErrForeign = errors.New("not a pzone hub backup")
	ErrDamaged = errors.New("the backup is damaged or cut short")
	ErrVersion = errors.New("the backup is of a format this pzh does not know")
)

// hashWriter hashes everything written through it.
type hashWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	return n, err
}

// Write writes a backup of files, described by h (its Version and Files
// are filled in here), to w.
func Write(w io.Writer, h Header, files []Source) error {
	h.Version = FormatVersion
	h.Files = h.Files[:0]
	for _, f := range files {
		h.Files = append(h.Files, f.Name)
	}
	all := hashWriter{w, sha256.New()}
	if _, err := io.WriteString(all, Magic); err != nil {
		return err
	}
	if err := transport.WriteFrame(all, &h); err != nil {
		return err
	}
	for _, f := range files {
		if err := transport.WriteFrame(all, &fileHeader{Name: f.Name, Size: f.Size}); err != nil {
			return err
		}
		one := hashWriter{all, sha256.New()}
		n, err := f.WriteTo(one)
		if err != nil {
			return fmt.Errorf("back up %s: %w", f.Name, err)
		}
		if n != f.Size {
			return fmt.Errorf("back up %s: wrote %d bytes of %d", f.Name, n, f.Size)
		}
		if _, err := all.Write(one.h.Sum(nil)); err != nil {
			return err
		}
	}
	if err := transport.WriteFrame(all, &trailer{Files: len(files)}); err != nil {
		return err
	}
	_, err := w.Write(all.h.Sum(nil))
	return err
}

// hashReader hashes everything read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
}

func (hr hashReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

// Read reads a backup from r and checks all of it. Each file's bytes go
// to what open returns for its name (open refuses names it does not
// want); nothing read may be trusted until Read returned without error:
// the checksums are checked as the bytes pass.
func Read(r io.Reader, open func(name string, size int64) (io.Writer, error)) (*Header, error) {
	all := hashReader{r, sha256.New()}
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(all, magic); err != nil || string(magic) != Magic {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrForeign, Magic)
	}
	fr := transport.NewFrameReader(all, maxHeader)
	var h Header
	if err := fr.ReadFrame(&h); err != nil {
		return nil, fmt.Errorf("%w: its header is unreadable (%v)", ErrDamaged, err)
	}
	if h.Version != FormatVersion {
		return nil, fmt.Errorf("%w: version %d (this pzh reads version %d): restore it with the pzh that made it, or a newer one", ErrVersion, h.Version, FormatVersion)
	}
	if len(h.Files) == 0 || len(h.Files) > maxFiles {
		return nil, fmt.Errorf("%w: it lists %d files", ErrDamaged, len(h.Files))
	}
	for i, name := range h.Files {
		var fh fileHeader
		if err := fr.ReadFrame(&fh); err != nil {
			return nil, fmt.Errorf("%w: file %d's header is unreadable (%v)", ErrDamaged, i+1, err)
		}
		if fh.Name != name || fh.Size < 0 {
			return nil, fmt.Errorf("%w: file %d is %q of %d bytes; the header lists %q", ErrDamaged, i+1, fh.Name, fh.Size, name)
		}
		dst, err := open(name, fh.Size)
		if err != nil {
			return nil, err
		}
		one := sha256.New()
		if n, err := io.CopyN(io.MultiWriter(dst, one), all, fh.Size); err != nil {
			if n < fh.Size && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
				return nil, fmt.Errorf("%w: %s ends after %d of its %d bytes", ErrDamaged, name, n, fh.Size)
			}
			return nil, fmt.Errorf("restore %s: %w", name, err)
		}
		sum := make([]byte, sha256.Size)
		if _, err := io.ReadFull(all, sum); err != nil {
			return nil, fmt.Errorf("%w: %s has no checksum", ErrDamaged, name)
		}
		if string(sum) != string(one.Sum(nil)) {
			return nil, fmt.Errorf("%w: %s does not match its checksum", ErrDamaged, name)
		}
	}
	var tr trailer
	if err := fr.ReadFrame(&tr); err != nil || tr.Files != len(h.Files) {
		return nil, fmt.Errorf("%w: its end is missing or wrong", ErrDamaged)
	}
	want := all.h.Sum(nil)
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, sum); err != nil || string(sum) != string(want) {
		return nil, fmt.Errorf("%w: it does not match its checksum", ErrDamaged)
	}
	if n, _ := io.ReadFull(r, make([]byte, 1)); n > 0 {
		return nil, fmt.Errorf("%w: bytes follow its end", ErrDamaged)
	}
	return &h, nil
}
