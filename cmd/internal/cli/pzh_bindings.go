package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubBindingsCmd(g *globals) *cobra.Command {
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "bindings",
		Short: "List the applications' live uses of services (bindings); 'bindings end ID' cuts one",
		Long: `bindings lists what the hub relays between applications and services: one
binding per application and service, made by its first call and ended with
either device's session, the device's revocation, or 'pzh bindings end ID'.
With --all it also lists recently ended ones and why they ended.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/bindings"
			if all {
				path += "?all=1"
			}
			var v api.BindingsView
			if err := hubDo(cmd.Context(), g, http.MethodGet, path, nil, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Bindings)
			}
			if len(v.Bindings) == 0 {
				fmt.Fprintln(out, "no bindings")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFROM\tTO\tSINCE\tCALLS\tBYTES IN\tBYTES OUT\tTOKEN\tENDED")
			for _, b := range v.Bindings {
				ended := "-"
				if b.Ended != nil {
					ended = timeOrDash(b.Ended) + " " + b.Reason
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", b.ID, b.From, b.To, timeOrDash(&b.Since), b.Calls, b.BytesIn, b.BytesOut, dash(b.Token), ended)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (fields in docs/PROTOCOL.md)")
	cmd.Flags().BoolVar(&all, "all", false, "also list recently ended bindings, with why")
	cmd.AddCommand(newHubBindingsEndCmd(g))
	return cmd
}

func newHubBindingsEndCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "end ID",
		Short: "End a binding now, cutting its calls in flight",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("end takes the binding's ID (pzh bindings lists them)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var v api.BindingView
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/bindings/"+url.PathEscape(args[0])+"/end", nil, &v); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "binding %s (%s to %s) ended\n", v.ID, v.From, v.To)
			return err
		},
	}
}
