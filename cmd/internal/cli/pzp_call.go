package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

func newPeerCallCmd(g *globals) *cobra.Command {
	var token string
	var timeout, ttl time.Duration
	cmd := &cobra.Command{
		Use:   "call ADDR METHOD [JSON]",
		Short: "Call a method of a service and print its result",
		Long: `call sends METHOD with the JSON argument (null when left out) to the service at
ADDR, DEVICE/SERVICE in this zone or FRIEND/DEVICE/SERVICE in a friend zone
(its name as pzh friends shows it), and prints the JSON result. A failed call
exits 1 and says why: no such device, service or friend, offline, denied by
policy (this zone's or the friend's), deadline, or the service's own error. With --ttl, a call
to a device that is asleep or offline waits up to that long for it (the
hub wakes it), on top of --timeout; a call takes at most 10 minutes in all.`,
		Args: addrArgs(2, 3, 0, "call takes ADDR METHOD [JSON]", func(args []string) error {
			if err := wire.ValidateServiceName(args[1]); err != nil {
				return usagef("method: %v", err)
			}
			if len(args) == 3 && !json.Valid([]byte(args[2])) {
				return usagef("the argument %q is not JSON (a string needs quotes: '\"text\"')", args[2])
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			arg := json.RawMessage("null")
			if len(args) == 3 {
				arg = json.RawMessage(args[2])
			}
			if ttl < 0 {
				return usagef("--ttl must not be negative")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+ttl)
			defer cancel()
			res, err := c.CallWith(ctx, api.CallRequestBody{To: args[0], Method: args[1], Body: arg, Token: token, TTLMs: ttl.Milliseconds()})
			if err != nil {
				return hint(err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(res))
			return err
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "a service token (ID.SECRET from pzh tokens issue), for services that require one")
	cmd.Flags().DurationVar(&timeout, "timeout", wire.DefaultCallTimeout, "give up after this long")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "wait up to this long for a device that is asleep or offline (0: fail at once)")
	return cmd
}

func newPeerSendCmd(g *globals) *cobra.Command {
	var timeout, ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "send ADDR MESSAGE",
		Short: "Send a one-way message to a service",
		Long: `send delivers MESSAGE to the service at ADDR and returns once the application
serving it has it. MESSAGE is sent as a JSON string unless it is itself
valid JSON (an object, array, number, true/false/null or a quoted string).

With --ttl, a message for a device that is asleep or offline is kept at the
hub for up to that long (at most 30 days) and the hub wakes the device; it
is delivered, in order, once the device is back. For a friend zone
(FRIEND/DEVICE/SERVICE) it waits at the friend's hub, or at this zone's hub
while the friend's is not linked. send then prints that it was queued, and
until when. A full queue at the hub is an error (exit 1).`,
		Args: addrArgs(2, 2, 0, "send takes ADDR MESSAGE", nil),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			msg := json.RawMessage(args[1])
			if !json.Valid(msg) {
				msg, _ = json.Marshal(args[1])
			}
			if ttl < 0 || ttl > wire.MaxTTL {
				return usagef("--ttl %v: use 0 (deliver now or fail) up to %v", ttl, wire.MaxTTL)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := c.SendWith(ctx, api.CallRequestBody{To: args[0], Body: msg, TTLMs: ttl.Milliseconds()})
			if err != nil {
				return hint(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if res.Queued {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "queued at the hub for %s until %s\n", args[0], res.Expires.Local().Format(time.RFC3339))
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", wire.DefaultCallTimeout, "give up after this long")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "keep the message at the hub this long if the device is asleep or offline (0: deliver now or fail)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON")
	return cmd
}
