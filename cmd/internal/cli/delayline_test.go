package cli

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// A delay line for the fault matrix where the kernel has no netem: the
// router sends what it forwards through a TUN device, and pzdelay (the
// test binary run as that) reads each packet and writes it back after
// the delay, to be forwarded on. Packets keep their order (a FIFO, as
// netem with a rate does): the jitter spreads the delays, never swaps
// two packets. The queue holds delayLimit packets and drops beyond, as a
// router's queue would.
//
//	pzdelay --dev NAME --delay 100ms --jitter 20ms
//
// It opens the persistent TUN device NAME (made by ip tuntap), prints
// "ready" once packets reach it, and runs until SIGTERM.

const delayLimit = 10000

// tunSetIff is TUNSETIFF from linux/if_tun.h; iffTun and iffNoPI are its
// flags: an IP-level device, with no packet-information header.
const (
	tunSetIff = 0x400454ca
	iffTun    = 0x0001
	iffNoPI   = 0x1000
)

func delayMain() int {
	fs := flag.NewFlagSet("pzdelay", flag.ContinueOnError)
	dev := fs.String("dev", "", "TUN device")
	delay := fs.Duration("delay", 0, "mean delay")
	jitter := fs.Duration("jitter", 0, "the delay varies by up to this either way")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if err := runDelayLine(*dev, *delay, *jitter); err != nil {
		fmt.Fprintf(os.Stderr, "pzdelay: %v\n", err)
		return 1
	}
	return 0
}

func runDelayLine(dev string, delay, jitter time.Duration) error {
	if dev == "" || len(dev) >= 16 || jitter > delay {
		return errors.New("want --dev NAME (under 16 bytes) and a --jitter no larger than --delay")
	}
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr [40]byte // struct ifreq: the name, then the flags
	copy(ifr[:], dev)
	*(*uint16)(unsafe.Pointer(&ifr[16])) = iffTun | iffNoPI
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return fmt.Errorf("attach to %s: %w", dev, errno)
	}
	tun := os.NewFile(uintptr(fd), dev)
	defer tun.Close()

	type packet struct {
		b  []byte
		at time.Time
	}
	queue := make(chan packet, delayLimit)
	go func() {
		timer := time.NewTimer(0)
		for p := range queue {
			if wait := time.Until(p.at); wait > 0 {
				timer.Reset(wait)
				<-timer.C // the fault itself: the packet is in flight
			}
			tun.Write(p.b)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() { <-stop; tun.Close(); os.Exit(0) }()
	fmt.Println("ready")
	var last time.Time
	buf := make([]byte, 65536)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			return err
		}
		d := delay
		if jitter > 0 {
			d += time.Duration(rand.Int64N(int64(2*jitter)+1)) - jitter
		}
		at := time.Now().Add(d)
		if at.Before(last) {
			at = last // in order: never ahead of the packet before
		}
		last = at
		select {
		case queue <- packet{append([]byte(nil), buf[:n]...), at}:
		default: // the queue is full: dropped, as a router's would be
		}
	}
}

// startDelayLine makes the router send what it forwards through a delay
// line of delay ± jitter, each way. Conntrack (and so the masquerade)
// sees each packet once: a device's on its way out of the line, the
// hub's on its way in (the other pass is untracked).
func (l *netLab) startDelayLine(delay, jitter time.Duration) {
	l.t.Helper()
	const dev = "dl0"
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		l.t.Fatalf("fault matrix: this kernel has neither netem nor TUN devices (%v), so nothing here can delay packets", err)
	}
	l.in(l.rtr, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
	cmd := exec.Command("ip", "netns", "exec", l.rtr, "pzdelay", "--dev", dev, "--delay", delay.String(), "--jitter", jitter.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	// Before the namespaces go (cleanups run last first).
	l.t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		l.t.Fatalf("pzdelay did not start: %q %v", line, err)
	}
	for _, kv := range []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf." + dev + ".rp_filter=0"} {
		l.in(l.rtr, "sysctl", "-qw", kv)
	}
	l.in(l.rtr, "ip", "link", "set", dev, "up")
	l.in(l.rtr, "ip", "route", "add", "default", "dev", dev, "table", "100")
	for _, iif := range []string{"r0", "r1"} {
		l.in(l.rtr, "ip", "rule", "add", "iif", iif, "lookup", "100")
	}
	l.nft(`table inet delayline {
	chain pre { type filter hook prerouting priority raw;
		iifname "r1" notrack
		iifname "` + dev + `" ip daddr 10.77.2.0/24 notrack
	}
}`)
}
