package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/transport"
)

// The raw floors the sync rows are measured against: an echo over a raw
// stream, and fsync'd bbolt commits on the same file system.

// rawPath is the raw floor of a change's way from device to device: an
// echo round trip over a raw stream (device to hub, hub to device), and
// three fsync'd single-record commits (the device, the hub, the other
// device).
type rawPath struct {
	echo    *rawEchoStream
	db      *rawDB
	commits []float64 // each commit's time, ms
}

func (s *syncBench) newRawPath(ctx context.Context, kind transport.Kind) (_ *rawPath, err error) {
	rp := &rawPath{}
	defer func() {
		if err != nil {
			rp.close()
		}
	}()
	if rp.echo, err = newRawEchoStream(ctx, kind, s.dir); err != nil {
		return nil, err
	}
	rp.db, err = openRawDB(s.dir, "raw-path-"+string(kind))
	return rp, err
}

// round times one echo and three commits.
func (rp *rawPath) round() (time.Duration, error) {
	start := time.Now()
	if err := rp.echo.round(); err != nil {
		return 0, err
	}
	for range 3 {
		t := time.Now()
		if err := rp.db.commit(); err != nil {
			return 0, err
		}
		rp.commits = append(rp.commits, ms(time.Since(t)))
	}
	return time.Since(start), nil
}

func (rp *rawPath) close() {
	if rp.db != nil {
		rp.db.close()
	}
	if rp.echo != nil {
		rp.echo.close()
	}
}

// rawEchoStream is a raw connection of one transport to an in-process raw
// server, with one echo stream open on it.
type rawEchoStream struct {
	srv      *rawServer
	conn     transport.Conn
	st       transport.Stream
	msg, buf []byte
}

// newRawEchoStream starts a raw server whose sinks write in dir, dials it
// and opens an echo stream.
func newRawEchoStream(ctx context.Context, kind transport.Kind, dir string) (*rawEchoStream, error) {
	srv, addr, ccfg, err := startRawLocal(kind, rawStreams(dir))
	if err != nil {
		return nil, err
	}
	e, err := dialRawEcho(ctx, addr, kind, ccfg)
	if err != nil {
		srv.close()
		return nil, err
	}
	e.srv = srv
	return e, nil
}

// dialRawEcho dials the raw server at addr (a fresh handshake) and opens
// an echo stream; its close leaves the server running.
func dialRawEcho(ctx context.Context, addr string, kind transport.Kind, ccfg transport.Config) (_ *rawEchoStream, err error) {
	e := &rawEchoStream{msg: bytes.Repeat([]byte{'e'}, echoSize), buf: make([]byte, echoSize)}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.conn, err = transport.Dial(ctx, addr, transport.Mode(kind), ccfg); err != nil {
		return nil, err
	}
	if e.st, err = e.conn.OpenStream(ctx); err != nil {
		return nil, err
	}
	if _, err = e.st.Write([]byte{rawEcho}); err != nil {
		return nil, err
	}
	return e, nil
}

// round sends echoSize bytes and reads them back.
func (e *rawEchoStream) round() error {
	if _, err := e.st.Write(e.msg); err != nil {
		return err
	}
	_, err := io.ReadFull(e.st, e.buf)
	return err
}

func (e *rawEchoStream) close() {
	if e.st != nil {
		e.st.Reset()
	}
	if e.conn != nil {
		e.conn.CloseWithError(0, "")
	}
	if e.srv != nil {
		e.srv.close()
	}
}

// rawDB is a bbolt file for raw commits: one record per fsync'd
// transaction, the way a store without group commit would write.
type rawDB struct {
	db   *bolt.DB
	path string
	n    uint64
	val  []byte
}

func openRawDB(dir, name string) (*rawDB, error) {
	path := filepath.Join(dir, name+".db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	return &rawDB{db: db, path: path, val: bytes.Repeat([]byte{'v'}, stateValueLen)}, nil
}

func (r *rawDB) commit() error {
	r.n++
	key := fmt.Appendf(nil, "%0*d", stateKeyLen, r.n)
	return r.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("raw"))
		if err != nil {
			return err
		}
		return b.Put(key, r.val)
	})
}

func (r *rawDB) close() {
	r.db.Close()
	os.Remove(r.path)
}
