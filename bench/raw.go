package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/localapi"
)

// rawPKI is a throwaway zone for the raw baselines: the same Ed25519
// certificates and the same verification work as a pzone session, without
// any of pzone's session protocol.
type rawPKI struct {
	ca         *certs.CA
	server     tls.Certificate
	client     tls.Certificate
	serverCert *x509.Certificate
}

func newRawPKI() (*rawPKI, error) {
	now := time.Now()
	ca, err := certs.NewCA("raw", now)
	if err != nil {
		return nil, err
	}
	p := &rawPKI{ca: ca}
	for _, who := range []string{certs.HubDevice, "client"} {
		key, err := certs.NewKey()
		if err != nil {
			return nil, err
		}
		c, err := ca.Sign(key.Public(), who, now, time.Hour)
		if err != nil {
			return nil, err
		}
		tc := tls.Certificate{Certificate: [][]byte{c.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: c}
		if who == certs.HubDevice {
			p.server, p.serverCert = tc, c
		} else {
			tc.Certificate = tc.Certificate[:1]
			p.client = tc
		}
	}
	return p, nil
}

func (p *rawPKI) serverConfig() transport.Config {
	return transport.Config{IdleTimeout: 10 * time.Minute, TLS: &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{transport.ALPNSession},
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := certs.Verify(p.ca.Cert, raw, time.Now(), 0)
			return err
		},
	}}
}

func (p *rawPKI) clientConfig() transport.Config {
	conf := pairing.PinnedHubTLS(p.ca.ZoneID, transport.ALPNSession, nil)
	cl := p.client
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cl, nil }
	return transport.Config{TLS: conf, IdleTimeout: 10 * time.Minute}
}

// save writes the CA and server credentials for a raw server child.
func (p *rawPKI) save(dir string) error {
	key, err := x509.MarshalPKCS8PrivateKey(p.server.PrivateKey)
	if err != nil {
		return err
	}
	caKey, err := x509.MarshalPKCS8PrivateKey(p.ca.Key)
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.der": p.ca.Cert.Raw, "ca.key": caKey, "server.der": p.serverCert.Raw, "server.key": key}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func loadRawPKI(dir string) (*rawPKI, error) {
	read := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return b
	}
	ca, err := certs.LoadCA(read("ca.der"), read("ca.key"))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(read("server.der"))
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(read("server.key"))
	if err != nil {
		return nil, err
	}
	return &rawPKI{ca: ca, serverCert: cert, server: tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: k, Leaf: cert}}, nil
}

// rawServer accepts mutual-TLS connections and holds them open, doing
// nothing else (the floor a pzone session is compared against), or
// passing each to handle (the raw streams of the sync rows).
type rawServer struct {
	ln     transport.Listener
	handle func(transport.Conn)
	mu     sync.Mutex
	conns  map[transport.Conn]struct{}
	done   chan struct{}
}

// startRawServer listens on addr; handle, if not nil, serves each
// connection (in its own goroutine).
func startRawServer(addr string, kind transport.Kind, p *rawPKI, handle func(transport.Conn)) (*rawServer, error) {
	ln, err := transport.ListenBoth(addr, p.serverConfig(), kind)
	if err != nil {
		return nil, err
	}
	s := &rawServer{ln: ln, handle: handle, conns: map[transport.Conn]struct{}{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			if s.handle != nil {
				go s.handle(c)
			}
			go func() {
				<-c.Done()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

func (s *rawServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *rawServer) close() {
	s.ln.Close()
	<-s.done
}

// RunRawServer is the raw baseline server as a child process (pzbench
// rawserver): it holds connections and answers GET /v1/debug/memstats on
// dir/raw.sock, until ctx ends.
func RunRawServer(ctx context.Context, kind transport.Kind, addr, dir string) error {
	p, err := loadRawPKI(dir)
	if err != nil {
		return fmt.Errorf("load raw PKI: %w", err)
	}
	s, err := startRawServer(addr, kind, p, nil)
	if err != nil {
		return err
	}
	defer s.close()
	sock := filepath.Join(dir, "raw.sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/debug/memstats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		st := localapi.ReadMemStats(r.URL.Query().Get("gc") == "1", s.count())
		fmt.Fprintf(w, `{"heap_alloc":%d,"heap_inuse":%d,"heap_objects":%d,"sys":%d,"rss":%d,"goroutines":%d,"sessions":%d}`,
			st.HeapAlloc, st.HeapInuse, st.HeapObjects, st.Sys, st.RSS, st.Goroutines, st.Sessions)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	<-ctx.Done()
	srv.Close()
	return nil
}

// The first byte of a raw stream says what the raw server does with it.
const (
	rawEcho = 'e' // echo every byte back until EOF
	rawSink = 's' // read to EOF into a file, fsync it once, answer one byte
	rawDrop = 'd' // read to EOF, keep nothing, answer one byte
)

// rawStreams serves the streams of a raw connection; sinks write their
// files in dir.
func rawStreams(dir string) func(transport.Conn) {
	return func(c transport.Conn) {
		for {
			st, err := c.AcceptStream(context.Background())
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				op := make([]byte, 1)
				if _, err := io.ReadFull(st, op); err != nil {
					st.Reset()
					return
				}
				switch op[0] {
				case rawEcho:
					io.Copy(st, st)
				case rawSink:
					if err := sinkToFile(st, dir); err != nil {
						st.Reset()
						return
					}
					st.Write([]byte{1})
				case rawDrop:
					if _, err := io.Copy(io.Discard, st); err != nil {
						st.Reset()
						return
					}
					st.Write([]byte{1})
				default:
					st.Reset()
				}
			}()
		}
	}
}

// sinkToFile reads r to EOF into a new file in dir, fsyncs it once and
// removes it: the least a receiver must do to hold bytes durably.
func sinkToFile(r io.Reader, dir string) error {
	f, err := os.CreateTemp(dir, "sink")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
