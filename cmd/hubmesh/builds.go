package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/build"
)

// buildSourceView is a build source as the API shows it: the URL and
// user name, never the password or key.
type buildSourceView struct {
	URL                   string `json:"url"`
	Username              string `json:"username,omitempty"`
	HostKeyFingerprint    string `json:"host_key_fingerprint,omitempty"`
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key,omitempty"`
	HasPassword           bool   `json:"has_password,omitempty"`
	HasSSHKey             bool   `json:"has_ssh_key,omitempty"`
}

// buildSettingsView is a repository's build settings as the API shows
// them: secrets hidden, the trigger and webhook URLs spelled out.
type buildSettingsView struct {
	Repo        string              `json:"repository"`
	Source      buildSourceView     `json:"source"`
	Rules       []hubmesh.BuildRule `json:"rules"`
	BuildArgs   map[string]string   `json:"build_args,omitempty"`
	AllowPushes bool                `json:"allow_pushes"`
	PollSeconds int                 `json:"poll_seconds,omitempty"`
	// TriggerURL starts builds on a POST; its last segment is a secret.
	// Git hosts send push webhooks to WebhookURL, signed with
	// WebhookSecret.
	TriggerURL    string    `json:"trigger_url,omitempty"`
	WebhookURL    string    `json:"webhook_url,omitempty"`
	WebhookSecret string    `json:"webhook_secret,omitempty"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
}

// buildSourceRequest is the source in a PUT of build settings; an empty
// secret keeps the stored one.
type buildSourceRequest struct {
	URL                   string `json:"url"`
	Username              string `json:"username,omitempty"`
	Password              string `json:"password,omitempty"`
	SSHKey                string `json:"ssh_key,omitempty"`
	SSHKeyPassphrase      string `json:"ssh_key_passphrase,omitempty"`
	HostKeyFingerprint    string `json:"host_key_fingerprint,omitempty"`
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key,omitempty"`
}

// buildSettingsRequest is the body of PUT .../build-settings.
type buildSettingsRequest struct {
	Source                 buildSourceRequest  `json:"source"`
	Rules                  []hubmesh.BuildRule `json:"rules"`
	BuildArgs              map[string]string   `json:"build_args,omitempty"`
	AllowPushes            bool                `json:"allow_pushes"`
	PollSeconds            int                 `json:"poll_seconds,omitempty"`
	RegenerateTriggerToken bool                `json:"regenerate_trigger_token,omitempty"`
}

// buildTriggerRequest is the body of POST .../builds: one of a source
// ref, a Docker tag, or neither (every rule with a literal source name).
type buildTriggerRequest struct {
	SourceType string `json:"source_type,omitempty"`
	SourceName string `json:"source_name,omitempty"`
	DockerTag  string `json:"docker_tag,omitempty"`
	Build      bool   `json:"build,omitempty"`
	Commit     string `json:"commit,omitempty"`
}

// buildsQueued is the answer of a trigger or retry.
type buildsQueued struct {
	Builds []hubmesh.Build `json:"builds"`
}

// Bounds of the files the configure flags read.
const (
	maxBuildPasswordFile = 4096
	maxSSHKeyFile        = 64 << 10
)

// buildPollInterval is how often --wait looks at the builds it waits for.
const buildPollInterval = time.Second

func newBuildCmd() *cobra.Command {
	return groupCmd("build", "Automated builds: build settings, triggers, history and logs of a repository's image builds",
		newBuildConfigureCmd(), newBuildSettingsCmd(), newBuildUnconfigureCmd(), newBuildTriggerCmd(),
		newBuildLsCmd(), newBuildShowCmd(), newBuildLogsCmd(), newBuildCancelCmd(), newBuildRetryCmd())
}

// buildsPath is the API path of a repository's builds.
func buildsPath(repo string) string { return repoPath(repo) + "/builds" }

// buildPath is the API path of one build.
func buildPath(repo, id string) string { return buildsPath(repo) + "/" + url.PathEscape(id) }

// repoAndID checks the REPO ID arguments of a build command.
func repoAndID(_ *cobra.Command, args []string) error {
	if err := checkRepoName(args[0]); err != nil {
		return err
	}
	if strings.TrimSpace(args[1]) == "" {
		return usageError{fmt.Errorf("build ID is empty")}
	}
	return nil
}

// readFlagFile reads the file a flag names ('-': standard input), at most
// limit bytes; trim drops trailing line ends (passwords, not PEM keys).
func readFlagFile(cmd *cobra.Command, flag, file string, limit int64, trim bool) (string, error) {
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", flag, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flag, err)
	}
	if int64(len(b)) > limit {
		return "", usageError{fmt.Errorf("--%s: longer than %d bytes", flag, limit)}
	}
	s := string(b)
	if trim {
		s = strings.TrimRight(s, "\r\n")
	}
	if strings.TrimSpace(s) == "" {
		return "", usageError{fmt.Errorf("--%s %s is empty", flag, file)}
	}
	return s, nil
}

// parseBuildRules parses the --rule flags (TYPE:NAME=>TAG) and gives each
// the Dockerfile, context, autobuild and cache settings of the command line.
func parseBuildRules(specs []string, dockerfile, context string, autobuild, cache bool) ([]hubmesh.BuildRule, error) {
	out := make([]hubmesh.BuildRule, 0, len(specs))
	for _, s := range specs {
		r, err := build.ParseRule(s)
		if err != nil {
			return nil, usageError{fmt.Errorf("--rule %q: %w", s, err)}
		}
		r.Dockerfile, r.Context = dockerfile, context
		r.Autobuild, r.BuildCache = autobuild, cache
		r = r.Normalize()
		if err := r.Validate(); err != nil {
			return nil, usageError{fmt.Errorf("--rule %q: %w", s, err)}
		}
		out = append(out, hubmesh.BuildRule{
			SourceType: string(r.SourceType), SourceName: r.SourceName, Tag: r.Tag,
			Dockerfile: r.Dockerfile, Context: r.Context, Autobuild: r.Autobuild, BuildCache: r.BuildCache,
		})
	}
	return out, nil
}

// parseBuildArgs parses the --build-arg K=V flags.
func parseBuildArgs(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, usageError{fmt.Errorf("--build-arg %q: want KEY=VALUE", a)}
		}
		if _, dup := out[k]; dup {
			return nil, usageError{fmt.Errorf("--build-arg %s given twice", k)}
		}
		out[k] = v
	}
	return out, nil
}

func newBuildConfigureCmd() *cobra.Command {
	var (
		o                                 output
		f                                 apiFlags
		source, username                  string
		passwordFile, keyFile, phraseFile string
		hostKey                           string
		insecureHostKey                   bool
		rules, buildArgs                  []string
		dockerfile, contextDir            string
		noAutobuild, noCache, allowPushes bool
		poll                              time.Duration
		regenerate                        bool
	)
	cmd := &cobra.Command{
		Use:   "configure REPO --source URL --rule 'TYPE:NAME=>TAG' ... [flags]",
		Short: "Set the automated build settings of a repository (replaces them; stored secrets not given are kept)",
		Long: "Set where a repository's images are built from and which branches and tags build which tags.\n" +
			"A rule is TYPE:NAME=>TAG: TYPE is branch or tag, NAME a name or a /regex/ (at most 9 capture\n" +
			"groups), TAG a template with {sourceref} (the branch or tag name) and {\\1}..{\\9} (the groups);\n" +
			"'=>TAG' may be left out ({sourceref}). --dockerfile, --context, --no-autobuild and --no-cache\n" +
			"apply to the rules of this command line. The settings are replaced as a whole, except the\n" +
			"password and ssh key, which are kept unless given again. Prints the settings with the\n" +
			"trigger URL (a secret: anyone holding it can start builds) and the git webhook URL.",
		Example: "  hubmesh build configure acme/api --source https://git.example/acme/api.git \\\n" +
			"    --rule 'branch:main=>latest' --rule 'tag:/^v([0-9.]+)$/=>{\\1}' --dockerfile Dockerfile --context .\n" +
			"  hubmesh build configure acme/api --source git@git.example:acme/api.git --ssh-key-file deploy_key \\\n" +
			"    --host-key-fingerprint SHA256:... --rule branch:main=>latest",
		Args:    exactArgs(1, "REPO"),
		PreRunE: func(*cobra.Command, []string) error { _, err := o.asJSON(); return err },
		RunE: func(cmd *cobra.Command, args []string) error {
			repo := args[0]
			if err := checkRepoName(repo); err != nil {
				return err
			}
			if source == "" {
				return usageError{fmt.Errorf("--source is required")}
			}
			if len(rules) == 0 {
				return usageError{fmt.Errorf("give at least one --rule TYPE:NAME=>TAG")}
			}
			if poll < 0 || (poll > 0 && poll < time.Second) {
				return usageError{fmt.Errorf("--poll %s: want 0 (off) or at least 1s", poll)}
			}
			if insecureHostKey && hostKey != "" {
				return usageError{fmt.Errorf("--host-key-fingerprint and --insecure-ignore-host-key exclude each other")}
			}
			rs, err := parseBuildRules(rules, dockerfile, contextDir, !noAutobuild, !noCache)
			if err != nil {
				return err
			}
			bargs, err := parseBuildArgs(buildArgs)
			if err != nil {
				return err
			}
			body := buildSettingsRequest{
				Source: buildSourceRequest{URL: source, Username: username, HostKeyFingerprint: hostKey,
					InsecureIgnoreHostKey: insecureHostKey},
				Rules: rs, BuildArgs: bargs, AllowPushes: allowPushes,
				PollSeconds: int(poll / time.Second), RegenerateTriggerToken: regenerate,
			}
			if passwordFile != "" {
				if body.Source.Password, err = readFlagFile(cmd, "password-file", passwordFile, maxBuildPasswordFile, true); err != nil {
					return err
				}
			}
			if keyFile != "" {
				if body.Source.SSHKey, err = readFlagFile(cmd, "ssh-key-file", keyFile, maxSSHKeyFile, false); err != nil {
					return err
				}
			}
			if phraseFile != "" {
				if body.Source.SSHKeyPassphrase, err = readFlagFile(cmd, "ssh-key-passphrase-file", phraseFile, maxBuildPasswordFile, true); err != nil {
					return err
				}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodPut, repoPath(repo)+"/build-settings", body, &raw); err != nil {
				return err
			}
			return showBuildSettings(cmd, o, raw)
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&o.json, "json", false, "print JSON (same as --format json)")
	fl.StringVar(&o.format, "format", "table", "output format: table or json")
	fl.StringVar(&source, "source", "", "git URL: https://host/path.git, ssh://user@host/path.git, user@host:path.git, or a local path (tests)")
	fl.StringVar(&username, "username", "", "user name for an https source")
	fl.StringVar(&passwordFile, "password-file", "", "file holding the password or token of an https source ('-': standard input)")
	fl.StringVar(&keyFile, "ssh-key-file", "", "file holding the PEM deploy key of an ssh source ('-': standard input)")
	fl.StringVar(&phraseFile, "ssh-key-passphrase-file", "", "file holding the passphrase of an encrypted deploy key")
	fl.StringVar(&hostKey, "host-key-fingerprint", "", "SHA256 fingerprint of the ssh server's host key (ssh-keygen -lf)")
	fl.BoolVar(&insecureHostKey, "insecure-ignore-host-key", false, "accept any ssh host key (trusted networks only)")
	fl.StringArrayVar(&rules, "rule", nil, "build rule TYPE:NAME=>TAG (repeatable), e.g. 'branch:main=>latest' or 'tag:/^v([0-9.]+)$/=>{\\1}'")
	fl.StringVar(&dockerfile, "dockerfile", build.DefaultDockerfile, "Dockerfile path, relative to the context, for the rules given")
	fl.StringVar(&contextDir, "context", build.DefaultContext, "build context directory, relative to the repository root, for the rules given")
	fl.BoolVar(&noAutobuild, "no-autobuild", false, "pushes to the rules' branches and tags do not start builds (manual and trigger URL only)")
	fl.BoolVar(&noCache, "no-cache", false, "build the rules' images without the builder's layer cache")
	fl.StringArrayVar(&buildArgs, "build-arg", nil, "KEY=VALUE passed to every build as --build-arg (repeatable)")
	fl.BoolVar(&allowPushes, "allow-pushes", false, "let users push to the repository by hand too (off: only its builds push)")
	fl.DurationVar(&poll, "poll", 0, "builders look for new commits of the autobuild branches and tags this often (0: never; at least 30s)")
	fl.BoolVar(&regenerate, "regenerate-trigger-token", false, "make a new trigger URL (the old one stops working)")
	return cmd
}

// showBuildSettings prints the settings view the API answered.
func showBuildSettings(cmd *cobra.Command, o output, raw json.RawMessage) error {
	var v buildSettingsView
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("build settings: bad answer: %w", err)
	}
	return show(cmd, o, raw, []string{"FIELD", "VALUE"}, func() [][]string { return buildSettingsRows(v) })
}

// buildSettingsRows lays out settings for a table, one field a row.
func buildSettingsRows(v buildSettingsView) [][]string {
	creds := []string{}
	if v.Source.Username != "" {
		creds = append(creds, "user "+v.Source.Username)
	}
	if v.Source.HasPassword {
		creds = append(creds, "password")
	}
	if v.Source.HasSSHKey {
		creds = append(creds, "ssh key")
	}
	switch {
	case v.Source.HostKeyFingerprint != "":
		creds = append(creds, "host key "+v.Source.HostKeyFingerprint)
	case v.Source.InsecureIgnoreHostKey:
		creds = append(creds, "any host key")
	}
	poll := "off"
	if v.PollSeconds > 0 {
		poll = (time.Duration(v.PollSeconds) * time.Second).String()
	}
	rows := [][]string{
		{"repository", v.Repo},
		{"source", v.Source.URL},
		{"credentials", orDash(strings.Join(creds, ", "))},
	}
	for i, r := range v.Rules {
		rule := build.Rule{SourceType: build.SourceType(r.SourceType), SourceName: r.SourceName, Tag: r.Tag}.String()
		opts := []string{"dockerfile " + orDash(r.Dockerfile), "context " + orDash(r.Context)}
		if r.Autobuild {
			opts = append(opts, "autobuild")
		}
		if !r.BuildCache {
			opts = append(opts, "no cache")
		}
		rows = append(rows, []string{fmt.Sprintf("rule %d", i+1), rule + " (" + strings.Join(opts, ", ") + ")"})
	}
	for _, k := range slices.Sorted(maps.Keys(v.BuildArgs)) {
		rows = append(rows, []string{"build arg", k + "=" + v.BuildArgs[k]})
	}
	rows = append(rows,
		[]string{"manual pushes", yesNo(v.AllowPushes)},
		[]string{"poll", poll},
		[]string{"trigger URL", orDash(v.TriggerURL)},
		[]string{"webhook URL", orDash(v.WebhookURL)},
		[]string{"webhook secret", orDash(v.WebhookSecret)},
		[]string{"updated", when(v.Updated)})
	return rows
}

func newBuildSettingsCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "settings REPO",
		Short: "Show a repository's build settings, with its trigger URL and webhook URL",
		Args:  exactArgs(1, "REPO"),
	}, repoArg, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var raw json.RawMessage
		if err := c.do(cmd.Context(), http.MethodGet, repoPath(args[0])+"/build-settings", nil, &raw); err != nil {
			return shown{}, err
		}
		var v buildSettingsView
		if err := json.Unmarshal(raw, &v); err != nil {
			return shown{}, fmt.Errorf("build settings: bad answer: %w", err)
		}
		return shown{raw, []string{"FIELD", "VALUE"}, func() [][]string { return buildSettingsRows(v) }}, nil
	})
}

func newBuildUnconfigureCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:   "unconfigure REPO",
		Short: "Delete a repository's build settings (its build history stays; manual pushes work again)",
		Args:  exactArgs(1, "REPO"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		if err := checkRepoName(args[0]); err != nil {
			return apiRequest{}, err
		}
		return apiRequest{method: http.MethodDelete, path: repoPath(args[0]) + "/build-settings"}, nil
	})
}

// buildHeader and buildRow lay out builds in a table.
var buildHeader = []string{"ID", "STATE", "TRIGGER", "SOURCE", "COMMIT", "TAGS", "ATTEMPT", "CREATED", "DURATION", "MESSAGE"}

func buildRow(b hubmesh.Build) []string {
	commit := b.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	attempt := "-"
	if b.Attempt > 0 {
		attempt = strconv.Itoa(b.Attempt)
	}
	return []string{b.ID, b.State, b.Trigger, b.SourceType + ":" + b.SourceName, orDash(commit),
		orDash(strings.Join(b.Tags, ",")), attempt, when(b.Created), buildDuration(b), orDash(truncateRunes(b.Message, 60))}
}

// buildDuration is how long a build ran (or has run so far), from its
// start, or "-" before it started.
func buildDuration(b hubmesh.Build) string {
	start := b.Started
	if start.IsZero() {
		start = b.Claimed
	}
	if start.IsZero() {
		return "-"
	}
	end := b.Finished
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(start).Round(time.Second).String()
}

func buildRows(bs []hubmesh.Build) func() [][]string {
	return func() [][]string {
		rows := make([][]string, len(bs))
		for i, b := range bs {
			rows[i] = buildRow(b)
		}
		return rows
	}
}

// buildDetailRows lays out one build for `build show`.
func buildDetailRows(b hubmesh.Build) [][]string {
	rows := [][]string{
		{"id", b.ID},
		{"repository", b.Repo},
		{"state", b.State},
		{"trigger", b.Trigger},
		{"actor", orDash(b.Actor)},
		{"source", b.SourceType + ":" + b.SourceName},
		{"commit", orDash(b.Commit)},
		{"tags", orDash(strings.Join(b.Tags, ","))},
		{"dockerfile", b.Dockerfile},
		{"context", b.Context},
		{"build cache", yesNo(b.BuildCache)},
	}
	if b.RetryOf != "" {
		rows = append(rows, []string{"retry of", b.RetryOf})
	}
	rows = append(rows,
		[]string{"builder", orDash(b.Builder)},
		[]string{"attempt", strconv.Itoa(b.Attempt)},
		[]string{"message", orDash(b.Message)},
		[]string{"digest", orDash(b.Digest)},
		[]string{"log", orDash(b.LogDigest)},
		[]string{"created", when(b.Created)},
		[]string{"claimed", when(b.Claimed)},
		[]string{"started", when(b.Started)},
		[]string{"finished", when(b.Finished)},
		[]string{"duration", buildDuration(b)})
	return rows
}

// waitBuilds polls the builds until each has finished, for at most
// timeout, and returns them as they ended.
func waitBuilds(ctx context.Context, c *apiClient, repo string, bs []hubmesh.Build, timeout time.Duration) ([]hubmesh.Build, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := slices.Clone(bs)
	t := time.NewTicker(buildPollInterval)
	defer t.Stop()
	for {
		open := 0
		for i := range out {
			if hubmesh.BuildFinished(out[i].State) {
				continue
			}
			var b hubmesh.Build
			if err := c.do(ctx, http.MethodGet, buildPath(repo, out[i].ID), nil, &b); err != nil {
				if ctx.Err() != nil {
					return out, fmt.Errorf("build %s still %s after --timeout %s", out[i].ID, out[i].State, timeout)
				}
				return out, err
			}
			out[i] = b
			if !hubmesh.BuildFinished(b.State) {
				open++
			}
		}
		if open == 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			for _, b := range out {
				if !hubmesh.BuildFinished(b.State) {
					return out, fmt.Errorf("build %s still %s after --timeout %s", b.ID, b.State, timeout)
				}
			}
			return out, ctx.Err()
		case <-t.C:
		}
	}
}

// queuedCmd completes cmd, a command that queues builds (trigger, retry):
// req makes the request; with --wait it waits for the builds to finish
// and fails unless every one succeeded.
func queuedCmd(cmd *cobra.Command, check func(cmd *cobra.Command, args []string) error,
	req func(cmd *cobra.Command, args []string) (string, any)) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd = showCmd(cmd, check, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		path, body := req(cmd, args)
		var q buildsQueued
		if err := c.do(cmd.Context(), http.MethodPost, path, body, &q); err != nil {
			return shown{}, err
		}
		if q.Builds == nil {
			q.Builds = []hubmesh.Build{}
		}
		if !wait {
			return shown{q.Builds, buildHeader, buildRows(q.Builds)}, nil
		}
		bs, err := waitBuilds(cmd.Context(), c, args[0], q.Builds, timeout)
		if err != nil {
			return shown{}, err
		}
		var failed []string
		for _, b := range bs {
			if b.State != hubmesh.BuildSuccess {
				failed = append(failed, fmt.Sprintf("build %s %s: %s", b.ID, b.State, orDash(oneLineText(b.Message))))
			}
		}
		if len(failed) > 0 {
			// The table first, then the error line.
			var o output
			o.json, _ = cmd.Flags().GetBool("json")
			o.format, _ = cmd.Flags().GetString("format")
			if err := show(cmd, o, bs, buildHeader, buildRows(bs)); err != nil {
				return shown{}, err
			}
			return shown{}, errors.New(strings.Join(failed, "; "))
		}
		return shown{bs, buildHeader, buildRows(bs)}, nil
	})
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the builds finish; fail unless all succeed")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "with --wait, give up after this long")
	return cmd
}

func newBuildTriggerCmd() *cobra.Command {
	var (
		sourceType, sourceName, tag, commit string
	)
	cmd := queuedCmd(&cobra.Command{
		Use:   "trigger REPO [--source-type branch|tag --source-name NAME | --tag TAG] [--commit SHA] [--wait]",
		Short: "Start builds of a repository now: of a branch or tag, of the rules producing a tag, or of every rule with a literal name",
		Example: "  hubmesh build trigger acme/api --source-type branch --source-name main\n" +
			"  hubmesh build trigger acme/api --tag latest --wait",
		Args: exactArgs(1, "REPO"),
	}, func(_ *cobra.Command, args []string) error {
		if err := checkRepoName(args[0]); err != nil {
			return err
		}
		switch {
		case (sourceType == "") != (sourceName == ""):
			return usageError{fmt.Errorf("--source-type and --source-name go together")}
		case sourceType != "" && tag != "":
			return usageError{fmt.Errorf("give --source-type/--source-name or --tag, not both")}
		}
		if sourceType != "" {
			if _, err := build.ParseSourceType(sourceType); err != nil {
				return usageError{fmt.Errorf("--source-type: %w", err)}
			}
		}
		return nil
	}, func(_ *cobra.Command, args []string) (string, any) {
		body := buildTriggerRequest{SourceType: strings.ToLower(sourceType), SourceName: sourceName, DockerTag: tag, Commit: commit}
		if sourceType == "" && tag == "" {
			body.Build = true
		}
		return buildsPath(args[0]), body
	})
	fl := cmd.Flags()
	fl.StringVar(&sourceType, "source-type", "", "branch or tag")
	fl.StringVar(&sourceName, "source-name", "", "the branch or tag name to build")
	fl.StringVar(&tag, "tag", "", "build the rules whose tags include this Docker tag")
	fl.StringVar(&commit, "commit", "", "build this commit (full hex) of the ref instead of its tip")
	return cmd
}

func newBuildRetryCmd() *cobra.Command {
	return queuedCmd(&cobra.Command{
		Use:   "retry REPO ID [--wait]",
		Short: "Build a finished build again: same source ref, commit and tags",
		Args:  exactArgs(2, "REPO ID"),
	}, repoAndID, func(_ *cobra.Command, args []string) (string, any) {
		return buildPath(args[0], args[1]) + "/retry", nil
	})
}

// listBuilds GETs a repository's builds, newest first, following the
// "next" cursor (the id of the last build of a page), up to limit (0: all).
func listBuilds(ctx context.Context, c *apiClient, repo string, limit int) ([]hubmesh.Build, error) {
	const pageSize = 100
	var all []hubmesh.Build
	last := ""
	for range maxListPages {
		n := pageSize
		if limit > 0 && limit-len(all) < n {
			n = limit - len(all)
		}
		q := url.Values{"page_size": {strconv.Itoa(n)}}
		if last != "" {
			q.Set("last", last)
		}
		var page struct {
			Results []hubmesh.Build `json:"results"`
			Next    string          `json:"next"`
		}
		if err := c.do(ctx, http.MethodGet, buildsPath(repo)+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Results...)
		if limit > 0 && len(all) >= limit {
			return all[:limit], nil
		}
		if page.Next == "" || len(page.Results) == 0 {
			return all, nil
		}
		last = page.Next
		if u, err := url.Parse(page.Next); err == nil && u.Query().Get("last") != "" {
			last = u.Query().Get("last") // a link rather than a bare id
		}
	}
	return nil, fmt.Errorf("GET %s: more than %d pages", buildsPath(repo), maxListPages)
}

func newBuildLsCmd() *cobra.Command {
	var limit int
	cmd := showCmd(&cobra.Command{
		Use:     "ls REPO",
		Aliases: []string{"list", "history"},
		Short:   "List a repository's builds, newest first",
		Args:    exactArgs(1, "REPO"),
	}, func(_ *cobra.Command, args []string) error {
		if limit < 0 {
			return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", limit)}
		}
		return checkRepoName(args[0])
	}, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		bs, err := listBuilds(cmd.Context(), c, args[0], limit)
		if bs == nil {
			bs = []hubmesh.Build{}
		}
		return shown{bs, buildHeader, buildRows(bs)}, err
	})
	cmd.Flags().IntVar(&limit, "limit", 25, "show at most this many (0: all)")
	return cmd
}

func newBuildShowCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "show REPO ID",
		Short: "Show one build: state, source, commit, tags, builder, timings and outcome",
		Args:  exactArgs(2, "REPO ID"),
	}, repoAndID, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var b hubmesh.Build
		err := c.do(cmd.Context(), http.MethodGet, buildPath(args[0], args[1]), nil, &b)
		return shown{b, []string{"FIELD", "VALUE"}, func() [][]string { return buildDetailRows(b) }}, err
	})
}

func newBuildCancelCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "cancel REPO ID",
		Short: "Cancel a build that has not finished",
		Args:  exactArgs(2, "REPO ID"),
	}, repoAndID, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var b hubmesh.Build
		err := c.do(cmd.Context(), http.MethodPost, buildPath(args[0], args[1])+"/cancel", nil, &b)
		return shown{b, buildHeader, buildRows([]hubmesh.Build{b})}, err
	})
}

func newBuildLogsCmd() *cobra.Command {
	var (
		f      apiFlags
		follow bool
		offset int64
	)
	cmd := &cobra.Command{
		Use:   "logs REPO ID [--follow]",
		Short: "Print a build's log; --follow keeps printing until the build finishes",
		Args:  exactArgs(2, "REPO ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := repoAndID(cmd, args); err != nil {
				return err
			}
			if offset < 0 {
				return usageError{fmt.Errorf("--offset %d: want 0 or more", offset)}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if follow {
				q.Set("follow", "true")
			}
			if offset > 0 {
				q.Set("offset", strconv.FormatInt(offset, 10))
			}
			path := buildPath(args[0], args[1]) + "/logs"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			n, err := c.stream(cmd.Context(), path, cmd.OutOrStdout())
			if err != nil && n > 0 {
				return fmt.Errorf("%w (after %d bytes of the log; --offset %d goes on from there)", err, offset+n, offset+n)
			}
			return err
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing the log as the build writes it, until it finishes")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this byte of the log")
	return cmd
}

// stream GETs path and copies the answer to w as it arrives, without the
// client's overall timeout (a followed log lasts as long as its build).
// It returns the bytes copied.
func (c *apiClient) stream(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	c.cred.set(req)
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Errors []struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"errors"`
		}
		if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 && e.Errors[0].Message != "" {
			return 0, fmt.Errorf("%s (%s)", oneLineText(e.Errors[0].Message), e.Errors[0].Code)
		}
		return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", path, unwrapURLError(err))
	}
	return n, nil
}
