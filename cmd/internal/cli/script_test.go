package cli

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/storefile/pgkv/pgtest"
	"github.com/pzone/pzone/transport"
)

// TestMain lets the test binary act as pzh and pzp: scripts exec them as
// real child processes with their own sockets, stores and signals.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"pzh": func() { os.Exit(Run(HubCommand(tamperExtension))) },
		"pzp": func() { os.Exit(Run(PeerCommand())) },
		// Many devices in one process (fleet_test.go).
		"pzfleet": func() { os.Exit(fleetMain()) },
		// A delay line where the kernel has no netem (delayline_test.go).
		"pzdelay": func() { os.Exit(delayMain()) },
	})
}

// TestScripts runs the CLI scripts in testdata/script: each reads like a
// terminal session of a person running a hub and devices on loopback.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("..", "..", "..", "testdata", "script"),
		Setup: func(env *testscript.Env) error {
			// Keep socket paths short and logs quiet unless a script asks.
			env.Setenv("HOME", env.WorkDir)
			// Under -race every child would otherwise sleep 1 s at exit
			// (the race runtime's atexit_sleep_ms), for ~100 commands.
			env.Setenv("GORACE", "atexit_sleep_ms=0")
			setupSyncCmds(env)
			return nil
		},
		// [postgres]: PostgreSQL's server programs are here (pgstart).
		Condition: func(cond string) (bool, error) {
			if cond == "postgres" {
				return pgtest.Bin() != "", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"freeport":  cmdFreePort,
			"udpsink":   cmdUDPSink,
			"forge":     cmdForgeToken,
			"garbage":   cmdGarbage,
			"tokenfile": cmdTokenFile,
			"linevar":   cmdLineVar,
			"wrongcode": cmdWrongCode,
			// Zone state (script_sync_test.go).
			"editstream": cmdEditStream,
			"checkkeys":  cmdCheckKeys,
			"genrecords": cmdGenRecords,
			"waitseq":    cmdWaitSeq,
			"lines":      cmdLines,
			// Wakeup (script_wake_test.go).
			"udpsend":   cmdUDPSend,
			"waitpings": cmdWaitPings,
			"maybe":     cmdMaybe,
			// Friends (script_friend_test.go).
			"waitenvelopes": cmdWaitEnvelopes,
			// Direct connections (script_direct_test.go).
			"waitpath":        cmdWaitPath,
			"waithubaddrs":    cmdWaitHubAddrs,
			"waitfriendaddrs": cmdWaitFriendAddrs,
			// Streams (script_streams_test.go).
			"tcpecho": cmdTCPEcho,
			"tcpsend": cmdTCPSend,
			// Providers' clusters (script_cluster_test.go).
			"pgstart": cmdPGStart,
		},
	})
}

// freeport VAR: set VAR to a port free for both TCP and UDP on 127.0.0.1.
// It is chosen below the kernel's ephemeral range, so that while a hub in
// a script restarts on it, no socket of another test (a QUIC dial, a wake
// socket) can be handed the same port by the kernel in the meantime.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	port, ok := freePort()
	if !ok {
		ts.Fatalf("no free port")
	}
	ts.Setenv(args[0], strconv.Itoa(port))
}

// freePort picks a port free for both TCP and UDP on 127.0.0.1 (see
// freeport).
func freePort() (int, bool) {
	lo := ephemeralLow()
	for range 200 {
		port := freePortMin + mathrand.IntN(lo-freePortMin)
		tl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		return port, true
	}
	return 0, false
}

// freePortMin is the lowest port freeport picks: above the well-known and
// most registered services' ports.
const freePortMin = 20000

// ephemeralLow is the start of the kernel's ephemeral port range (Linux),
// or the IANA one elsewhere.
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > freePortMin+1000 {
				return lo
			}
		}
	}
	return 49152
}

// udpsink PORT: bind UDP 127.0.0.1:PORT and swallow every packet until the
// script ends, as a firewall dropping UDP would.
func cmdUDPSink(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: udpsink PORT")
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:"+args[0])
	ts.Check(err)
	ts.Defer(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
}

// tokenfile FILE: keep only the first line of FILE (the token pzh invite
// printed) so it can be fed to pzp pair - or forged.
func cmdTokenFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: tokenfile FILE")
	}
	data := ts.ReadFile(args[0])
	for i, c := range data {
		if c == '\n' {
			data = data[:i]
			break
		}
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(data+"\n"), 0o600))
}

// linevar FILE N VAR: set VAR to line N (from 1) of FILE.
func cmdLineVar(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: linevar FILE N VAR")
	}
	lines := strings.Split(strings.TrimRight(ts.ReadFile(args[0]), "\n"), "\n")
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 1 || n > len(lines) {
		ts.Fatalf("%s has no line %s", args[0], args[1])
	}
	ts.Setenv(args[2], strings.TrimSpace(lines[n-1]))
}

// wrongcode CODE VAR: set VAR to CODE with another last word: a code of
// the same invite that is wrong.
func cmdWrongCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: wrongcode CODE VAR")
	}
	c, err := pairing.ParseCode(args[0])
	ts.Check(err)
	c.Secret[pairing.CodeSecretSize-1]++
	ts.Setenv(args[1], c.String())
}

// forge IN OUT: write to OUT a token with IN's hub, zone and invite id but
// another secret: well-formed, so only the hub can refuse it.
func cmdForgeToken(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: forge IN OUT")
	}
	tok, err := pairing.ParseToken(ts.ReadFile(args[0]))
	ts.Check(err)
	rand.Read(tok.Secret)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(tok.String()+"\n"), 0o600))
}

// garbage ADDR: throw junk at a hub: raw bytes on TCP and UDP, then, over a
// real TLS pairing connection, an oversized frame header and a frame of
// malformed CBOR. The hub must shrug all of it off.
func cmdGarbage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: garbage ADDR")
	}
	addr := args[0]
	junk := make([]byte, 4096)
	rand.Read(junk)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Write(junk)
		c.Close()
	}
	if c, err := net.Dial("udp", addr); err == nil {
		for i := 0; i < 20; i++ {
			c.Write(junk[:1200])
		}
		c.Close()
	}
	insecure := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{transport.ALPNPairing}, MinVersion: tls.VersionTLS13}
	for _, payload := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0x0f},       // uvarint length of ~4 GiB
		{0x05, 0xa2, 0x01, 0x01, 0x01, 0x01}, // map with a duplicate key
		{0x03, 0xff, 0xfe, 0xfd},             // not CBOR
	} {
		for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			conn, err := transport.Dial(ctx, addr, mode, transport.Config{TLS: insecure})
			if err != nil {
				cancel()
				ts.Fatalf("garbage: dial %s over %s: %v", addr, mode, err)
			}
			st, err := conn.OpenStream(ctx)
			ts.Check(err)
			st.Write(payload)
			st.Close()
			// The hub answers with an error frame or hangs up; either way
			// it must not wait on us forever.
			buf := make([]byte, 512)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, err := st.Read(buf); err != nil {
					break
				}
			}
			conn.CloseWithError(0, "")
			cancel()
		}
	}
}
