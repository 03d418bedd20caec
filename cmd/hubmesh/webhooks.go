package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// webhookView is a webhook as the API shows it (never its secret).
type webhookView struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Repository     string    `json:"repository,omitempty"`
	Org            string    `json:"org,omitempty"`
	URL            string    `json:"url"`
	Events         []string  `json:"events"`
	Format         string    `json:"format"`
	Chain          bool      `json:"chain"`
	HasSecret      bool      `json:"has_secret"`
	Disabled       bool      `json:"disabled"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Failures       int       `json:"failures"`
	Deliveries     int       `json:"deliveries"`
	Dropped        int       `json:"dropped"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
}

// deliveryView is one entry of a webhook's delivery log.
type deliveryView struct {
	ID    string `json:"id"`
	Event struct {
		ID     string    `json:"id"`
		Type   string    `json:"type"`
		Repo   string    `json:"repo"`
		Tag    string    `json:"tag"`
		Digest string    `json:"digest"`
		Actor  string    `json:"actor"`
		At     time.Time `json:"at"`
	} `json:"event"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	NextAttempt   time.Time `json:"next_attempt"`
	WaitFor       string    `json:"wait_for,omitempty"`
	LastAttempt   time.Time `json:"last_attempt"`
	LastStatus    string    `json:"last_status"`
	LastCode      int       `json:"last_code"`
	LastLatencyMs int64     `json:"last_latency_ms"`
	LastBody      string    `json:"last_body"`
	Callback      *struct {
		State       string `json:"state"`
		Description string `json:"description"`
		Context     string `json:"context"`
		TargetURL   string `json:"target_url"`
	} `json:"callback,omitempty"`
}

// hookScope is the repository (REPO argument) or organization (--org) a
// webhook command works on.
type hookScope struct{ org string }

func (s *hookScope) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.org, "org", "", "an organization-wide webhook of ORG (covers all its repositories) instead of a repository's")
}

// path is the API path of the webhooks, and the arguments after the scope.
func (s hookScope) path(args []string, rest int, what string) (string, []string, error) {
	if s.org != "" {
		if len(args) != rest {
			return "", nil, usageError{fmt.Errorf("with --org, give %s", what)}
		}
		return "/api/v1/orgs/" + url.PathEscape(s.org) + "/webhooks", args, nil
	}
	if len(args) != rest+1 {
		return "", nil, usageError{fmt.Errorf("give REPO and %s (or --org ORG)", what)}
	}
	if err := checkRepoName(args[0]); err != nil {
		return "", nil, err
	}
	return repoPath(args[0]) + "/webhooks", args[1:], nil
}

func newWebhookCmd() *cobra.Command {
	return groupCmd("webhook", "Manage webhooks: POSTs with Docker Hub's payload on push, tag delete, repository create and delete",
		newWebhookAddCmd(), newWebhookLsCmd(), newWebhookRmCmd(), newWebhookSetCmd(), newWebhookDeliveriesCmd(), newWebhookRedeliverCmd())
}

// maxSecretFile bounds what --secret-file reads.
const maxSecretFile = 4096

func readSecretFile(cmd *cobra.Command, file string) (string, error) {
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--secret-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("--secret-file: %w", err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("--secret-file: longer than %d bytes", maxSecretFile)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", usageError{fmt.Errorf("--secret-file %s is empty", file)}
	}
	return s, nil
}

func newWebhookAddCmd() *cobra.Command {
	var (
		f                       apiFlags
		s                       hookScope
		name, hookURL, secretFn string
		events, format          string
		chain                   bool
	)
	cmd := &cobra.Command{
		Use:   "add REPO --name NAME --url URL [--secret-file FILE] [--events push,tag_delete] [--format cloudevents] [--chain]",
		Short: "Add a webhook to a repository (or, with --org, to every repository of an organization)",
		Long: "Add a webhook. Each delivery is a POST of Docker Hub's payload (or a CloudEvent with\n" +
			"--format cloudevents), signed with X-Hub-Signature-256 when a secret is set. Events:\n" +
			"push (default), tag_delete, repo_create, repo_delete, build_queued, build_started,\n" +
			"build_success, build_failure, build_cancelled. --chain: the chained webhooks of a\n" +
			"repository fire in name order, each after the previous one's receiver reported success\n" +
			"to its callback_url.",
		Example: "  hubmesh webhook add acme/api --name ci --url https://ci.example/hook --secret-file s\n" +
			"  hubmesh webhook add --org acme --name audit --url https://audit.example/in --events push,repo_delete",
		Args: rangeArgs(0, 1, "REPO (or --org ORG)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, _, err := s.path(args, 0, "no REPO")
			if err != nil {
				return err
			}
			if name == "" || hookURL == "" {
				return usageError{fmt.Errorf("--name and --url are required")}
			}
			body := map[string]any{"name": name, "url": hookURL, "format": format, "chain": chain}
			if events != "" {
				body["events"] = splitCSV(events)
			}
			if secretFn != "" {
				sec, err := readSecretFile(cmd, secretFn)
				if err != nil {
					return err
				}
				body["secret"] = sec
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var v webhookView
			if err := c.do(cmd.Context(), http.MethodPost, path, body, &v); err != nil {
				return err
			}
			return printName(cmd, v.Name)
		},
	}
	f.add(cmd)
	s.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "name of the webhook (unique in its repository or organization)")
	fl.StringVar(&hookURL, "url", "", "URL the deliveries are POSTed to")
	fl.StringVar(&secretFn, "secret-file", "", "file holding the HMAC secret ('-': standard input)")
	fl.StringVar(&events, "events", "push", "comma-separated events: push, tag_delete, repo_create, repo_delete, build_queued, build_started, build_success, build_failure, build_cancelled")
	fl.StringVar(&format, "format", "docker", "payload format: docker or cloudevents")
	fl.BoolVar(&chain, "chain", false, "chain this webhook after the repository's other chained ones (name order)")
	return cmd
}

func splitCSV(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newWebhookLsCmd() *cobra.Command {
	var (
		s    hookScope
		path string
	)
	cmd := showCmd(&cobra.Command{
		Use:     "ls REPO | --org ORG",
		Aliases: []string{"list"},
		Short:   "List the webhooks of a repository or organization",
		Args:    rangeArgs(0, 1, "REPO (or --org ORG)"),
	}, func(_ *cobra.Command, args []string) (err error) {
		path, _, err = s.path(args, 0, "no REPO")
		return err
	}, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		hs, err := listAll[webhookView](cmd.Context(), c, path, 0)
		if hs == nil {
			hs = []webhookView{}
		}
		return shown{hs, []string{"NAME", "URL", "EVENTS", "FORMAT", "CHAIN", "SECRET", "STATE", "FAILURES"}, func() [][]string {
			rows := make([][]string, len(hs))
			for i, h := range hs {
				state := "enabled"
				if h.Disabled {
					state = "disabled: " + orDash(h.DisabledReason)
				}
				rows[i] = []string{h.Name, h.URL, strings.Join(h.Events, ","), h.Format, yesNo(h.Chain), yesNo(h.HasSecret), state, strconv.Itoa(h.Failures)}
			}
			return rows
		}}, err
	})
	s.add(cmd)
	return cmd
}

// hookRequestCmd completes cmd, a webhook command of REPO NAME (or --org
// ORG NAME) and n-1 more arguments that makes one request: req makes it
// of the webhook's API path and the arguments after the scope.
func hookRequestCmd(cmd *cobra.Command, n int, what string,
	req func(cmd *cobra.Command, hook string, rest []string) (apiRequest, error)) *cobra.Command {
	var s hookScope
	cmd = requestCmd(cmd, func(cmd *cobra.Command, args []string) (apiRequest, error) {
		path, rest, err := s.path(args, n, what)
		if err != nil {
			return apiRequest{}, err
		}
		return req(cmd, path+"/"+url.PathEscape(rest[0]), rest[1:])
	})
	s.add(cmd)
	return cmd
}

func newWebhookRmCmd() *cobra.Command {
	return hookRequestCmd(&cobra.Command{
		Use:   "rm REPO NAME | --org ORG NAME",
		Short: "Delete a webhook and its delivery log",
		Args:  rangeArgs(1, 2, "REPO NAME (or --org ORG NAME)"),
	}, 1, "NAME", func(_ *cobra.Command, hook string, _ []string) (apiRequest, error) {
		return apiRequest{method: http.MethodDelete, path: hook}, nil
	})
}

func newWebhookSetCmd() *cobra.Command {
	var (
		hookURL, secretFn string
		events, format    string
		enable, disable   bool
		chain, noChain    bool
	)
	cmd := hookRequestCmd(&cobra.Command{
		Use:   "set REPO NAME | --org ORG NAME [--url U] [--secret-file F] [--events E] [--format F] [--enable|--disable] [--chain|--no-chain]",
		Short: "Change a webhook; --enable re-enables one that was disabled after failures",
		Args:  rangeArgs(1, 2, "REPO NAME (or --org ORG NAME)"),
	}, 1, "NAME", func(cmd *cobra.Command, hook string, _ []string) (apiRequest, error) {
		body := map[string]any{}
		fl := cmd.Flags()
		if fl.Changed("url") {
			body["url"] = hookURL
		}
		if fl.Changed("events") {
			body["events"] = splitCSV(events)
		}
		if fl.Changed("format") {
			body["format"] = format
		}
		switch {
		case enable && disable, chain && noChain:
			return apiRequest{}, usageError{fmt.Errorf("--enable/--disable and --chain/--no-chain exclude each other")}
		case enable || disable:
			body["disabled"] = disable
		}
		if chain || noChain {
			body["chain"] = chain
		}
		if secretFn != "" {
			sec, err := readSecretFile(cmd, secretFn)
			if err != nil {
				return apiRequest{}, err
			}
			body["secret"] = sec
		}
		if len(body) == 0 {
			return apiRequest{}, usageError{fmt.Errorf("webhook set changes nothing")}
		}
		return apiRequest{method: http.MethodPatch, path: hook, body: body}, nil
	})
	fl := cmd.Flags()
	fl.StringVar(&hookURL, "url", "", "new URL")
	fl.StringVar(&secretFn, "secret-file", "", "file holding the new secret ('-': standard input)")
	fl.StringVar(&events, "events", "", "comma-separated events")
	fl.StringVar(&format, "format", "", "docker or cloudevents")
	fl.BoolVar(&enable, "enable", false, "enable (and reset the failure count)")
	fl.BoolVar(&disable, "disable", false, "disable (pending deliveries fail)")
	fl.BoolVar(&chain, "chain", false, "make it part of the repository's chain")
	fl.BoolVar(&noChain, "no-chain", false, "take it out of the chain")
	return cmd
}

func newWebhookDeliveriesCmd() *cobra.Command {
	var (
		s     hookScope
		path  string
		limit int
	)
	cmd := showCmd(&cobra.Command{
		Use:   "deliveries REPO NAME | --org ORG NAME",
		Short: "Show a webhook's delivery log, newest first",
		Args:  rangeArgs(1, 2, "REPO NAME (or --org ORG NAME)"),
	}, func(_ *cobra.Command, args []string) error {
		p, rest, err := s.path(args, 1, "NAME")
		if err != nil {
			return err
		}
		path = p + "/" + url.PathEscape(rest[0]) + "/deliveries"
		return nil
	}, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		ds, err := listAll[deliveryView](cmd.Context(), c, path, limit)
		if ds == nil {
			ds = []deliveryView{}
		}
		return shown{ds, []string{"ID", "EVENT", "REF", "STATE", "ATTEMPTS", "CODE", "LATENCY", "LAST", "CALLBACK"}, func() [][]string {
			rows := make([][]string, len(ds))
			for i, d := range ds {
				ref := d.Event.Repo
				if d.Event.Tag != "" {
					ref += ":" + d.Event.Tag
				}
				cb := "-"
				if d.Callback != nil {
					cb = d.Callback.State
				}
				last := d.LastStatus
				if d.LastBody != "" {
					last += " " + strconv.Quote(truncateRunes(d.LastBody, 40))
				}
				rows[i] = []string{d.ID, d.Event.Type, ref, d.State, strconv.Itoa(d.Attempts), strconv.Itoa(d.LastCode),
					strconv.FormatInt(d.LastLatencyMs, 10) + "ms", orDash(last), cb}
			}
			return rows
		}}, err
	})
	s.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "show at most this many (0: all)")
	return cmd
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func newWebhookRedeliverCmd() *cobra.Command {
	return hookRequestCmd(&cobra.Command{
		Use:   "redeliver REPO NAME ID | --org ORG NAME ID",
		Short: "Deliver an event again (with the same delivery id)",
		Args:  rangeArgs(2, 3, "REPO NAME ID (or --org ORG NAME ID)"),
	}, 2, "NAME ID", func(_ *cobra.Command, hook string, rest []string) (apiRequest, error) {
		return apiRequest{method: http.MethodPost, path: hook + "/deliveries/" + url.PathEscape(rest[0]) + "/redeliver"}, nil
	})
}
