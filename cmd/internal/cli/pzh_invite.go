package cli

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"rsc.io/qr"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/zone/api"
)

type hubInviteOptions struct {
	device       string
	ttl          time.Duration
	uses         int
	certLifetime time.Duration
	qr           bool
	code         bool
	json         bool
}

func newHubInviteCmd(g *globals) *cobra.Command {
	o := &hubInviteOptions{}
	cmd := &cobra.Command{
		Use:   "invite --device NAME",
		Short: "Create a one-time invite for a device and print its token",
		Long: `invite creates an invite and prints its token on one line. On the device,
run 'pzp pair TOKEN'. The hub keeps only a hash of the token's secret. With
--uses N the invite pairs N devices, named NAME, NAME-2, NAME-3, ...

With --code it also prints a short code on a second line, such as
3-violet-canyon-ember-river, to read aloud or type: on the device, run
'pzp pair --code CODE HUB:PORT'. The code is the password of an exchange
that proves to each side that the other holds it; each try tests one
guess, and 3 wrong codes burn the invite. The hub keeps the code's words
until the invite ends.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.device == "" {
				return usagef("--device is required: name the device, e.g. --device phone")
			}
			req := api.InviteRequest{Device: o.device, TTL: o.ttl.String(), Uses: o.uses, CertLifetime: o.certLifetime.String(), Code: o.code}
			var v api.InviteView
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/invites", req, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, v)
			}
			fmt.Fprintln(out, v.Token)
			if o.code {
				fmt.Fprintln(out, v.Code)
			}
			if o.qr {
				if err := drawQR(out, v.Token); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "invite %s for device %q: %d use(s), expires %s\n", v.ID, v.Device, v.Uses, v.Expires.Local().Format(time.DateTime))
			if o.code {
				fmt.Fprintf(cmd.ErrOrStderr(), "on the device: pzp pair --code %s %s\n", v.Code, publicAddr(cmd, g))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.device, "device", "", "name the device gets: 1-63 lower-case letters, digits and '-'")
	f.DurationVar(&o.ttl, "ttl", pairing.DefaultInviteTTL, "how long the invite stays valid")
	f.IntVar(&o.uses, "uses", 1, "how many devices may pair with it")
	f.DurationVar(&o.certLifetime, "cert-lifetime", pairing.DefaultCertLifetime, "lifetime of the device certificate (it renews itself at 2/3)")
	f.BoolVar(&o.qr, "qr", false, "also draw the token as a QR code in the terminal")
	f.BoolVar(&o.code, "code", false, "also print a short code to read aloud (pzp pair --code)")
	f.BoolVar(&o.json, "json", false, "print the invite as JSON (includes the token)")
	cmd.AddCommand(newHubInviteCancelCmd(g))
	return cmd
}

// drawQR draws text as a QR code with Unicode half blocks: two modules per
// character cell vertically, with the quiet zone the standard asks for.
func drawQR(w io.Writer, text string) error {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return fmt.Errorf("draw QR code: %w", err)
	}
	const quiet = 2
	n := code.Size
	dark := func(x, y int) bool {
		if x < 0 || y < 0 || x >= n || y >= n {
			return false
		}
		return code.Black(x, y)
	}
	var b strings.Builder
	// Light modules print as ink-free cells: the code reads on dark
	// terminals as light-on-dark, which phone scanners accept.
	for y := -quiet; y < n+quiet; y += 2 {
		for x := -quiet; x < n+quiet; x++ {
			top, bot := !dark(x, y), !dark(x, y+1)
			switch {
			case top && bot:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bot:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func newHubInviteCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an invite so its token no longer pairs anything",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := pairing.NormalizeInviteID(args[0])
			if err != nil {
				return usageError{err}
			}
			var v api.InviteView
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/invites/"+id, nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "invite %s for device %q cancelled\n", v.ID, v.Device)
			return nil
		},
	}
}

// publicAddr is the hub's first public address, for the hint a code
// invite prints, or HOST:PORT if the hub does not say.
func publicAddr(cmd *cobra.Command, g *globals) string {
	var st api.HubStatus
	if hubDo(cmd.Context(), g, http.MethodGet, "/v1/status", nil, &st) == nil && len(st.PublicAddrs) > 0 {
		return st.PublicAddrs[0]
	}
	return "HOST:PORT"
}
