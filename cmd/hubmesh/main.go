// Command hubmesh runs a hubmesh node (`hubmesh serve`) and talks to one.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes: 0 success, 1 the command failed, 2 the command line is wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error in the command line itself.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

// run executes the command line and returns the process exit code. Errors
// are printed as one line on stderr.
func run(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "hubmesh: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	return 0
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "hubmesh",
		Short:         "Docker Hub as a peer-to-peer mesh of container registries",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{err}
	})
	root.AddCommand(newServeCmd(), newClusterCmd(), newVersionCmd(), newHealthcheckCmd(),
		newLoginCmd(), newUserCmd(), newOrgCmd(), newTeamCmd(), newRepoCmd(), newNamespaceCmd(), newTokenCmd(),
		newAuditCmd(), newSettingsCmd(), newKeysCmd(), newSearchCmd(), newWebhookCmd(), newBuildCmd(),
		newExportCmd(), newImportCmd())
	// Cobra only checks the root's arguments when it has a RunE: without
	// one, an unknown command would print help and exit 0.
	root.Args = cobra.ArbitraryArgs
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q; see 'hubmesh --help'", args[0])}
		}
		return cmd.Help()
	}
	return root
}
