package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh/registryapi"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Manage the nodes of a cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newJoinTokenCmd(), newClusterStatusCmd(), newClusterLeaveCmd(), newClusterRemoveCmd())
	return cmd
}

func newJoinTokenCmd() *cobra.Command {
	var server, role, ttl string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Print a token that lets a new node join the cluster",
		Long: "Print a signed, expiring token for `hubmesh serve --join URL --join-token TOKEN`.\n" +
			"Only the token is printed, so T=$(hubmesh cluster join-token) works.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(server)
			if err != nil {
				return err
			}
			var tok registryapi.JoinToken
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/cluster/join-tokens", map[string]string{"role": role, "ttl": ttl}, &tok); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(tok)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			return err
		},
	}
	addServerFlag(cmd, &server)
	cmd.Flags().StringVar(&role, "role", "voter", "role of the new node: voter or mirror (a Raft non-voter)")
	cmd.Flags().StringVar(&ttl, "ttl", "24h", "how long the token stays valid")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print token, role and expiry as JSON")
	return cmd
}

func newClusterStatusCmd() *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the members of the cluster, their roles and health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(server)
			if err != nil {
				return err
			}
			var st registryapi.ClusterStatus
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/cluster/status", nil, &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(out, "cluster %s, answered by %s (%s, term %d, applied %d/%d)\n",
				st.ClusterID, st.ID, strings.ToLower(st.Raft.State), st.Raft.Term, st.Raft.AppliedIndex, st.Raft.LastIndex)
			if st.Offline {
				fmt.Fprintf(out, "OFFLINE: %s (serving what it holds; writes are refused)\n", st.OfflineReason)
			}
			fmt.Fprintf(out, "local blobs: %d (%d bytes)\n\n", st.Blobs.Count, st.Blobs.Bytes)
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tLEADER\tHTTP\tSTATE")
			for _, m := range st.Members {
				leader := ""
				if m.Leader {
					leader = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, m.Role, leader, m.HTTP, m.State)
			}
			return tw.Flush()
		},
	}
	addServerFlag(cmd, &server)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func newClusterLeaveCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take the node at --server out of the cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(server)
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodPost, "/api/v1/cluster/leave", nil, nil)
		},
	}
	addServerFlag(cmd, &server)
	return cmd
}

func newClusterRemoveCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Take another node (by its ID) out of the cluster",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("cluster remove takes one node ID, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(server)
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, "/api/v1/cluster/members/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	addServerFlag(cmd, &server)
	return cmd
}
