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
	cred credentials
}

// Credential variables of the CLI.
const (
	envUsername = "HUBMESH_USERNAME"
	envPassword = "HUBMESH_PASSWORD"
	envToken    = "HUBMESH_TOKEN"
)

// credentials are what the CLI authenticates with, from the environment:
// HUBMESH_TOKEN (a personal access token, or a session token from `hubmesh
// login`) wins over HUBMESH_PASSWORD. A token goes as the password of Basic
// auth with HUBMESH_USERNAME, or as a Bearer token when there is no user
// name or it is a JWT (a session or registry token).
type credentials struct {
	username, password, token string
}

func credentialsFromEnv() credentials {
	return credentials{
		username: os.Getenv(envUsername),
		password: os.Getenv(envPassword),
		token:    os.Getenv(envToken),
	}
}

// set adds the Authorization header, if there are credentials.
func (c credentials) set(req *http.Request) {
	switch {
	case c.token != "" && (c.username == "" || isJWT(c.token)):
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.token != "":
		req.SetBasicAuth(c.username, c.token)
	case c.username != "":
		req.SetBasicAuth(c.username, c.password)
	}
}

func (c credentials) empty() bool { return c.username == "" && c.token == "" }

// isJWT tells a JSON Web Token (header.payload.signature, the header a
// base64url JSON object) from a personal access token.
func isJWT(tok string) bool {
	return strings.HasPrefix(tok, "eyJ") && strings.Count(tok, ".") == 2
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
	return &apiClient{
		base: strings.TrimRight(u.String(), "/"),
		http: &http.Client{Timeout: 30 * time.Second},
		cred: credentialsFromEnv(),
	}, nil
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
	c.cred.set(req)
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
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized && c.cred.empty() {
			hint = "; set " + envUsername + " and " + envPassword + ", or " + envToken
		}
		if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
			msg := e.Errors[0].Message
			if msg == "" {
				msg = strings.ToLower(http.StatusText(resp.StatusCode))
			}
			return fmt.Errorf("%s (%s)%s", oneLineText(msg), e.Errors[0].Code, hint)
		}
		var oauth struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(b, &oauth) == nil && oauth.Error != "" {
			return fmt.Errorf("%s %s: %s (%s)%s", method, path, oneLineText(oauth.Description), oauth.Error, hint)
		}
		return fmt.Errorf("%s %s: %s%s", method, path, resp.Status, hint)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
		}
	}
	return nil
}

// oneLineText folds a server message into one line.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
