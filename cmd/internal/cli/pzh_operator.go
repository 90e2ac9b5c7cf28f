package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pzone/pzone/zone/mgmt"
	"github.com/pzone/pzone/zone/web"
)

// The operator subcommands manage the accounts of the hub's management
// plane (pzh serve --web): who may log in to the dashboard and the API,
// with what password and second factor.

func newHubOperatorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Add, list and remove the operators who may log in to the web dashboard and API",
		Long: `operator manages the accounts of the hub's web dashboard and API (pzh serve
--web ADDR). Each operator has a password (stored as an argon2id hash) and,
once enrolled, a TOTP second factor (pzh operator mfa enroll): a login is then
only partial until the code from the authenticator app is given.

Passwords are read from the terminal without echo, or, when standard input
is not a terminal, from its first line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newHubOperatorAddCmd(g), newHubOperatorPasswdCmd(g), newHubOperatorRmCmd(g), newHubOperatorListCmd(g), newHubOperatorMFACmd(g))
	return cmd
}

// readPassword reads a new password: twice without echo from a terminal,
// or the first line of a standard input that is not one.
func readPassword(cmd *cobra.Command, prompt string) (string, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		errw := cmd.ErrOrStderr()
		fmt.Fprint(errw, prompt+": ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errw)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		fmt.Fprint(errw, "again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errw)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		if string(a) != string(b) {
			return "", usagef("the two passwords differ; nothing was changed")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, mgmt.MaxPasswordLen+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from standard input: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", usagef("no password: type it at the prompt, or give it as the first line of standard input")
	}
	return line, nil
}

func newHubOperatorAddCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "add NAME",
		Short: "Add an operator, with a password read without echo (or from standard input)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, fmt.Sprintf("password for operator %s", args[0]))
			if err != nil {
				return err
			}
			if err := mgmt.CheckPassword(pw); err != nil {
				return err
			}
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/operators", web.OperatorRequest{Name: args[0], Password: pw}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "operator %s added; enrol a second factor with: pzh operator mfa enroll %s\n", args[0], args[0])
			return nil
		},
	}
}

func newHubOperatorPasswdCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "passwd NAME",
		Short: "Change an operator's password (its web sessions end)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, fmt.Sprintf("new password for operator %s", args[0]))
			if err != nil {
				return err
			}
			if err := mgmt.CheckPassword(pw); err != nil {
				return err
			}
			if err := hubDo(cmd.Context(), g, http.MethodPut, "/v1/operators/"+args[0]+"/password", web.OperatorRequest{Password: pw}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of operator %s changed; its web sessions ended\n", args[0])
			return nil
		},
	}
}

func newHubOperatorRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove an operator (its web sessions end)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/operators/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "operator %s removed\n", args[0])
			return nil
		},
	}
}

func newHubOperatorListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the operators: second factor, recovery codes left, live sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []mgmt.OperatorView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/operators", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no operators; add one with: pzh operator add NAME")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSECOND FACTOR\tRECOVERY CODES\tSESSIONS\tPASSWORD CHANGED")
			for _, o := range list {
				mfa := "none"
				if o.MFA {
					mfa = "totp since " + o.MFAEnrolled.Local().Format(time.DateOnly)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", o.Name, mfa, o.RecoveryLeft, o.Sessions, o.PasswordChanged.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newHubOperatorMFACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mfa",
		Short: "Enrol, confirm or remove an operator's TOTP second factor",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newHubOperatorMFAEnrollCmd(g), newHubOperatorMFAConfirmCmd(g), newHubOperatorMFADisableCmd(g))
	return cmd
}

func newHubOperatorMFAEnrollCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Start a TOTP enrolment: print its otpauth:// URI and QR code, then confirm with a first code",
		Long: `enroll makes a new TOTP secret for the operator and prints it as an otpauth://
URI and a QR code for an authenticator app. On a terminal it then asks for
the first code the app shows, and prints the recovery codes (once: keep them
somewhere safe; each stands in for a code one time). Otherwise confirm with
'pzh operator mfa confirm NAME CODE'. Until confirmed, logins need only the
password (and a second factor confirmed before stays in force).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var e mgmt.Enrolment
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/operators/"+args[0]+"/mfa", nil, &e); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, e)
			}
			fmt.Fprintln(out, e.URI)
			if err := drawQR(out, e.URI); err != nil {
				return err
			}
			fmt.Fprintf(out, "secret (to type instead): %s\n", e.Secret)
			in, ok := cmd.InOrStdin().(*os.File)
			if !ok || !term.IsTerminal(int(in.Fd())) {
				fmt.Fprintf(cmd.ErrOrStderr(), "confirm with: pzh operator mfa confirm %s CODE\n", args[0])
				return nil
			}
			fmt.Fprint(cmd.ErrOrStderr(), "code the app shows: ")
			code, err := bufio.NewReader(in).ReadString('\n')
			if err != nil {
				return fmt.Errorf("read the code: %w", err)
			}
			return confirmMFA(cmd, g, args[0], strings.TrimSpace(code))
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the enrolment (secret and URI) as JSON, and confirm separately")
	return cmd
}

func confirmMFA(cmd *cobra.Command, g *globals, name, code string) error {
	var rc web.RecoveryCodes
	if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/operators/"+name+"/mfa/confirm", web.CodeRequest{Code: code}, &rc); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "second factor of operator %s confirmed. Recovery codes, shown this once (each works one time instead of a code):\n", name)
	for _, c := range rc.Codes {
		fmt.Fprintln(out, "  "+c)
	}
	return nil
}

func newHubOperatorMFAConfirmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm NAME CODE",
		Short: "Confirm a TOTP enrolment with the code the app shows, and print the recovery codes",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return confirmMFA(cmd, g, args[0], strings.TrimSpace(args[1]))
		},
	}
}

func newHubOperatorMFADisableCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "disable NAME",
		Short: "Remove an operator's second factor (a lost phone with no recovery code left)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/operators/"+args[0]+"/mfa", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "second factor of operator %s removed: its logins need only the password until it enrols again\n", args[0])
			return nil
		},
	}
}
