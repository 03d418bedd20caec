package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh/node"
)

func newHealthcheckCmd() *cobra.Command {
	var (
		addr     string
		addrFile string
		timeout  time.Duration
		ready    bool
	)
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the node answers /healthz (or /readyz with --ready); for images built FROM scratch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addrFile != "" {
				a, err := node.ReadAddrFile(addrFile)
				if err != nil {
					return err
				}
				addr = a.HTTP
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return usageError{fmt.Errorf("--addr %q: want host:port", addr)}
			}
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "127.0.0.1"
			}
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			url := "http://" + net.JoinHostPort(host, port) + path
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck %s: %w", url, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck %s: %s", url, resp.Status)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", envOr("HUBMESH_HTTP_ADDR", node.Default().HTTPAddr), "HTTP address of the node (env HUBMESH_HTTP_ADDR)")
	f.StringVar(&addrFile, "addr-file", "", "read the address from a node's addr file")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	f.BoolVar(&ready, "ready", false, "check /readyz instead of /healthz")
	return cmd
}
