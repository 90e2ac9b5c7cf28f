package cli

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/zone/api"
)

func newHubFriendInviteCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a friend invite so its token no longer makes friends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := pairing.NormalizeInviteID(args[0])
			if err != nil {
				return usageError{err}
			}
			var v api.FriendInviteView
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/friends/invites/"+id, nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "friend invite %s cancelled\n", v.ID)
			return nil
		},
	}
}
