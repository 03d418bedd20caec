package main

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestBuildCommands checks what each build command sends to the API and
// prints, against a fake server.
func TestBuildCommands(t *testing.T) {
	t.Setenv(envUsername, "admin")
	t.Setenv(envPassword, "s3cret")
	t.Setenv(envToken, "")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("tok3n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := `{"repository":"acme/api","source":{"url":"https://git.example/acme/api.git","username":"bot","has_password":true},
		"rules":[{"source_type":"branch","source_name":"main","tag":"latest","dockerfile":"Dockerfile","context":".","autobuild":true,"build_cache":true}],
		"allow_pushes":false,"trigger_url":"http://node/api/v1/repositories/acme/api/trigger/abc","webhook_url":"http://node/api/v1/repositories/acme/api/builds/webhook","webhook_secret":"0123456789abcdef"}`
	build1 := `{"id":"00000000000000070000","repo":"acme/api","state":"queued","trigger":"manual","source_type":"branch","source_name":"main","tags":["latest"],"dockerfile":"Dockerfile","context":"."}`
	done1 := strings.Replace(build1, `"queued"`, `"success"`, 1)
	failed1 := strings.Replace(build1, `"state":"queued"`, `"state":"failure","message":"step 2 failed: exit code 1"`, 1)
	for _, tc := range []struct {
		name    string
		args    []string
		replies []reply
		want    []recorded
		out     []string
		err     string
	}{
		{name: "configure",
			args: []string{"build", "configure", "acme/api", "--source", "https://git.example/acme/api.git", "--username", "bot",
				"--password-file", pwFile, "--rule", "branch:main=>latest", "--rule", `tag:/^v([0-9.]+)$/=>{\1},stable`,
				"--dockerfile", "build/Dockerfile", "--context", "src", "--no-cache", "--build-arg", "A=1,2", "--poll", "90s"},
			replies: []reply{{200, settings}},
			want: []recorded{{Method: "PUT", Path: "/api/v1/repositories/acme/api/build-settings", Body: map[string]any{
				"source": map[string]any{"url": "https://git.example/acme/api.git", "username": "bot", "password": "tok3n"},
				"rules": []any{
					map[string]any{"source_type": "branch", "source_name": "main", "tag": "latest", "dockerfile": "build/Dockerfile", "context": "src", "autobuild": true, "build_cache": false},
					map[string]any{"source_type": "tag", "source_name": "/^v([0-9.]+)$/", "tag": `{\1},stable`, "dockerfile": "build/Dockerfile", "context": "src", "autobuild": true, "build_cache": false},
				},
				"build_args": map[string]any{"A": "1,2"}, "allow_pushes": false, "poll_seconds": float64(90),
			}}},
			out: []string{"trigger URL", "http://node/api/v1/repositories/acme/api/trigger/abc", "webhook URL", "branch:main=>latest", "user bot, password"}},
		{name: "settings", args: []string{"build", "settings", "acme/api"}, replies: []reply{{200, settings}},
			want: []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/build-settings"}},
			out:  []string{"acme/api", "https://git.example/acme/api.git", "autobuild", "manual pushes", "0123456789abcdef"}},
		{name: "unconfigure", args: []string{"build", "unconfigure", "acme/api"}, replies: []reply{{204, ""}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/repositories/acme/api/build-settings"}}},
		{name: "trigger branch", args: []string{"build", "trigger", "acme/api", "--source-type", "Branch", "--source-name", "main"},
			replies: []reply{{202, `{"builds":[` + build1 + `]}`}},
			want: []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds",
				Body: map[string]any{"source_type": "branch", "source_name": "main"}}},
			out: []string{"00000000000000070000", "queued", "branch:main", "latest"}},
		{name: "trigger tag", args: []string{"build", "trigger", "acme/api", "--tag", "latest", "--commit", "abc"},
			replies: []reply{{202, `{"builds":[` + build1 + `]}`}},
			want: []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds",
				Body: map[string]any{"docker_tag": "latest", "commit": "abc"}}}},
		{name: "trigger all", args: []string{"build", "trigger", "acme/api"},
			replies: []reply{{202, `{"builds":[]}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds", Body: map[string]any{"build": true}}}},
		{name: "trigger wait", args: []string{"build", "trigger", "acme/api", "--wait"},
			replies: []reply{{202, `{"builds":[` + build1 + `]}`}, {200, build1}, {200, done1}},
			want: []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds", Body: map[string]any{"build": true}},
				{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000"},
				{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000"}},
			out: []string{"success"}},
		{name: "trigger wait failure", args: []string{"build", "trigger", "acme/api", "--wait"},
			replies: []reply{{202, `{"builds":[` + build1 + `]}`}, {200, failed1}},
			want: []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds", Body: map[string]any{"build": true}},
				{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000"}},
			out: []string{"failure"}, err: "build 00000000000000070000 failure: step 2 failed: exit code 1"},
		{name: "ls pages", args: []string{"build", "ls", "acme/api", "--limit", "0"},
			replies: []reply{{200, `{"results":[` + build1 + `],"next":"00000000000000070000"}`}, {200, `{"results":[` + done1 + `],"next":""}`}},
			want: []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/builds?page_size=100"},
				{Method: "GET", Path: "/api/v1/repositories/acme/api/builds?last=00000000000000070000&page_size=100"}},
			out: []string{"queued", "success"}},
		{name: "show", args: []string{"build", "show", "acme/api", "00000000000000070000"}, replies: []reply{{200, failed1}},
			want: []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000"}},
			out:  []string{"step 2 failed: exit code 1", "dockerfile"}},
		{name: "cancel", args: []string{"build", "cancel", "acme/api", "00000000000000070000"},
			replies: []reply{{200, strings.Replace(build1, `"queued"`, `"cancelled"`, 1)}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000/cancel"}},
			out:     []string{"cancelled"}},
		{name: "cancel finished", args: []string{"build", "cancel", "acme/api", "00000000000000070000"},
			replies: []reply{{409, `{"errors":[{"code":"CONFLICT","message":"build already success"}]}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000/cancel"}},
			err:     "build already success (CONFLICT)"},
		{name: "retry", args: []string{"build", "retry", "acme/api", "00000000000000070000"},
			replies: []reply{{202, `{"builds":[` + strings.Replace(build1, `"manual"`, `"retry"`, 1) + `]}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000/retry"}},
			out:     []string{"retry"}},
		{name: "logs follow", args: []string{"build", "logs", "acme/api", "00000000000000070000", "--follow"},
			replies: []reply{{200, "==> cloning\nStep 1/3 : FROM busybox\n"}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000/logs?follow=true"}},
			out:     []string{"Step 1/3 : FROM busybox"}},
		{name: "logs missing", args: []string{"build", "logs", "acme/api", "00000000000000070000"},
			replies: []reply{{404, `{"errors":[{"code":"NOT_FOUND","message":"no log yet"}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/builds/00000000000000070000/logs"}},
			err:     "no log yet (NOT_FOUND)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAPI{replies: tc.replies}
			srv := httptest.NewServer(f)
			defer srv.Close()
			out, err := runCLI(t, srv.URL, "", tc.args...)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if len(f.reqs) != len(tc.want) {
				t.Fatalf("sent %d requests, want %d: %+v", len(f.reqs), len(tc.want), f.reqs)
			}
			for i, w := range tc.want {
				got := f.reqs[i]
				if got.Method != w.Method || got.Path != w.Path {
					t.Errorf("request %d: %s %s, want %s %s", i, got.Method, got.Path, w.Method, w.Path)
				}
				if w.Body != nil && !reflect.DeepEqual(got.Body, w.Body) {
					t.Errorf("request %d body:\n got %#v\nwant %#v", i, got.Body, w.Body)
				}
			}
			for _, o := range tc.out {
				if !strings.Contains(out, o) {
					t.Errorf("output lacks %q:\n%s", o, out)
				}
			}
		})
	}
}

// TestBuildUsageErrors checks that build command lines that cannot work
// are usage errors found before anything is sent.
func TestBuildUsageErrors(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	for _, args := range [][]string{
		{"build", "configure", "acme/api", "--rule", "branch:main=>latest"}, // no source
		{"build", "configure", "acme/api", "--source", "/tmp/x"},            // no rule
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", "branch:main=>latest", "--poll", "10ms"},
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", "branch:/([/=>x"},     // bad regex
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", `tag:/^v(1)$/=>{\2}`}, // no group 2
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", "commit:abc=>latest"}, // bad type
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", "branch:main", "--build-arg", "NOVALUE"},
		{"build", "configure", "acme/api", "--source", "/tmp/x", "--rule", "branch:main", "--password-file", filepath.Join(t.TempDir(), "none")},
		{"build", "trigger", "acme/api", "--source-type", "branch"},
		{"build", "trigger", "acme/api", "--source-type", "commit", "--source-name", "x"},
		{"build", "trigger", "acme/api", "--source-type", "branch", "--source-name", "main", "--tag", "latest"},
		{"build", "show", "acme/api"},
		{"build", "logs", "/bad", "1"},
		{"build", "ls", "acme/api", "--format", "yaml"},
		{"build", "frob"},
	} {
		_, err := runCLI(t, srv.URL, "", args...)
		var ue usageError
		if err == nil || (!errors.As(err, &ue) && !strings.Contains(err.Error(), "--password-file")) {
			t.Errorf("%q: error %v, want a usage error", args, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error is not one line: %q", args, err)
		}
	}
	if len(f.reqs) != 0 {
		t.Errorf("usage errors sent %d requests: %+v", len(f.reqs), f.reqs)
	}
}
