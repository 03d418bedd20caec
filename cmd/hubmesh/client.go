package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// apiClient talks to one node's HTTP API on behalf of a CLI command.
type apiClient struct {
	base string
	http *http.Client
}

// addServerFlag adds --server (env HUBMESH_SERVER) to cmd.
func addServerFlag(cmd *cobra.Command, server *string) {
	cmd.Flags().StringVar(server, "server", envOr("HUBMESH_SERVER", "http://127.0.0.1:5000"), "URL of any node (env HUBMESH_SERVER)")
}

func newAPIClient(server string) (*apiClient, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usageError{fmt.Errorf("--server %q: want a URL such as http://node1:5000", server)}
	}
	return &apiClient{base: strings.TrimRight(u.String(), "/"), http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends a JSON request and decodes a JSON answer into out (when not
// nil). An error response becomes an error carrying the server's message.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if u := os.Getenv("HUBMESH_USERNAME"); u != "" {
		req.SetBasicAuth(u, os.Getenv("HUBMESH_PASSWORD"))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Errors []struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"errors"`
		}
		if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("%s (%s)", e.Errors[0].Message, e.Errors[0].Code)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
