package registryapi

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

var updateOpenAPI = flag.Bool("update-openapi", false, "rewrite openapi.json from the route table")

// apiOp documents one operation. The table is the source of openapi.json:
// TestOpenAPIDocument regenerates the document from it and checks it
// against the live routers.
type apiOp struct {
	method, path, summary, tag string
	auth                       string   // "none", "user", "admin"
	query                      []string // query parameters
	body                       map[string]string
	status                     int
	resp                       any // a value of the response type; nil: no body
}

type loginResp struct {
	Token string `json:"token"`
}

var apiOps = []apiOp{
	{"POST", "/api/v1/users/login", "Log in; returns an API session token (1 hour)", "users", "none", nil, map[string]string{"username": "string", "password": "string"}, 200, loginResp{}},
	{"GET", "/api/v1/users", "List users (site administrators)", "users", "admin", []string{"page_size", "last"}, nil, 200, listPage[userView]{}},
	{"POST", "/api/v1/users", "Create a user (anyone when signup is open, else administrators)", "users", "none", nil, map[string]string{"username": "string", "password": "string", "email": "string", "is_admin": "boolean"}, 201, userView{}},
	{"GET", "/api/v1/users/{name}", "Get a user (others see the public view)", "users", "user", nil, nil, 200, userView{}},
	{"PATCH", "/api/v1/users/{name}", "Change email, password, is_admin or disabled", "users", "user", nil, map[string]string{"email": "string", "password": "string", "current_password": "string", "is_admin": "boolean", "disabled": "boolean"}, 200, userView{}},
	{"DELETE", "/api/v1/users/{name}", "Delete a user and its namespace", "users", "user", nil, nil, 204, nil},
	{"GET", "/api/v1/user", "Who am I", "users", "user", nil, nil, 200, userView{}},
	{"GET", "/api/v1/users/{name}/starred", "Repositories a user starred (those the caller may see)", "repositories", "none", []string{"page_size", "last"}, nil, 200, listPage[repoView]{}},

	{"GET", "/api/v1/orgs", "List organizations", "orgs", "user", []string{"page_size", "last"}, nil, 200, listPage[orgView]{}},
	{"POST", "/api/v1/orgs", "Create an organization (the caller becomes its owner)", "orgs", "user", nil, map[string]string{"orgname": "string"}, 201, orgView{}},
	{"GET", "/api/v1/orgs/{org}", "Get an organization", "orgs", "user", nil, nil, 200, orgView{}},
	{"DELETE", "/api/v1/orgs/{org}", "Delete an organization, its teams and repositories", "orgs", "user", nil, nil, 204, nil},
	{"GET", "/api/v1/orgs/{org}/teams", "List teams", "orgs", "user", nil, nil, 200, listPage[teamView]{}},
	{"POST", "/api/v1/orgs/{org}/teams", "Create a team", "orgs", "user", nil, map[string]string{"name": "string", "description": "string"}, 201, teamView{}},
	{"GET", "/api/v1/orgs/{org}/teams/{team}", "Get a team", "orgs", "user", nil, nil, 200, teamView{}},
	{"DELETE", "/api/v1/orgs/{org}/teams/{team}", "Delete a team", "orgs", "user", nil, nil, 204, nil},
	{"GET", "/api/v1/orgs/{org}/teams/{team}/members", "List team members", "orgs", "user", nil, nil, 200, listPage[memberView]{}},
	{"GET", "/api/v1/orgs/{org}/teams/{team}/members/{user}", "Is a user a member", "orgs", "user", nil, nil, 200, memberView{}},
	{"PUT", "/api/v1/orgs/{org}/teams/{team}/members/{user}", "Add a member", "orgs", "user", nil, nil, 200, memberView{}},
	{"DELETE", "/api/v1/orgs/{org}/teams/{team}/members/{user}", "Remove a member", "orgs", "user", nil, nil, 204, nil},
	{"GET", "/api/v1/orgs/{org}/teams/{team}/permissions", "List a team's repository permissions", "orgs", "user", nil, nil, 200, listPage[grantView]{}},
	{"PUT", "/api/v1/orgs/{org}/teams/{team}/permissions/{repo}", "Grant a team read, write or admin on a repository", "orgs", "user", nil, map[string]string{"permission": "string"}, 200, grantView{}},
	{"DELETE", "/api/v1/orgs/{org}/teams/{team}/permissions/{repo}", "Remove a team's grant", "orgs", "user", nil, nil, 204, nil},

	{"GET", "/api/v1/repositories", "List repositories the caller may see", "repositories", "none", []string{"namespace", "page_size", "last"}, nil, 200, listPage[repoView]{}},
	{"POST", "/api/v1/repositories", "Create a repository before its first push", "repositories", "user", nil, map[string]string{"namespace": "string", "name": "string", "is_private": "boolean", "description": "string", "full_description": "string"}, 201, repoView{}},
	{"GET", "/api/v1/repositories/{ns}", "List the repositories of a namespace", "repositories", "none", []string{"page_size", "last"}, nil, 200, listPage[repoView]{}},
	{"GET", "/api/v1/repositories/{ns}/{name}", "Get a repository", "repositories", "none", nil, nil, 200, repoView{}},
	{"PATCH", "/api/v1/repositories/{ns}/{name}", "Change visibility and descriptions (description: 100 characters; full_description: Markdown, 25000)", "repositories", "user", nil, map[string]string{"is_private": "boolean", "description": "string", "full_description": "string"}, 200, repoView{}},
	{"DELETE", "/api/v1/repositories/{ns}/{name}", "Delete a repository", "repositories", "user", nil, nil, 204, nil},
	{"GET", "/api/v1/repositories/{ns}/{name}/tags", "List tags with digest, size, media type, platforms, last pushed and pulled", "repositories", "none", []string{"page_size", "last"}, nil, 200, listPage[tagView]{}},
	{"PUT", "/api/v1/repositories/{ns}/{name}/stars", "Star a repository", "repositories", "user", nil, nil, 204, nil},
	{"DELETE", "/api/v1/repositories/{ns}/{name}/stars", "Unstar a repository", "repositories", "user", nil, nil, 204, nil},
	{"PUT", "/api/v1/repositories/{ns}/{name}/official", "Flag a repository official (site administrators)", "repositories", "admin", nil, nil, 204, nil},
	{"DELETE", "/api/v1/repositories/{ns}/{name}/official", "Clear a repository's official flag", "repositories", "admin", nil, nil, 204, nil},
	{"GET", "/api/v1/namespaces/{ns}", "Get namespace settings", "repositories", "user", nil, nil, 200, hubmesh.Namespace{}},
	{"PATCH", "/api/v1/namespaces/{ns}", "Change default_private", "repositories", "user", nil, map[string]string{"default_private": "boolean"}, 200, hubmesh.Namespace{}},
	{"PUT", "/api/v1/namespaces/{ns}/official", "Flag every repository of a namespace official (site administrators)", "repositories", "admin", nil, nil, 204, nil},
	{"DELETE", "/api/v1/namespaces/{ns}/official", "Clear a namespace's official flag", "repositories", "admin", nil, nil, 204, nil},
	{"GET", "/api/v1/search", "Search repositories", "search", "none", []string{"q", "page", "page_size", "is_official", "is_automated", "min_stars", "namespace"}, nil, 200, apiSearchPage{}},

	{"GET", "/api/v1/access-tokens", "List the caller's access tokens", "tokens", "user", nil, nil, 200, listPage[tokenView]{}},
	{"POST", "/api/v1/access-tokens", "Create an access token (the secret is shown once)", "tokens", "user", nil, map[string]string{"token_label": "string", "scopes": "array", "expires_in": "integer", "expires_at": "string"}, 201, tokenView{}},
	{"GET", "/api/v1/access-tokens/{uuid}", "Get an access token", "tokens", "user", nil, nil, 200, tokenView{}},
	{"DELETE", "/api/v1/access-tokens/{uuid}", "Revoke an access token", "tokens", "user", nil, nil, 204, nil},

	{"GET", "/api/v1/audit", "Audit log, oldest first (site administrators)", "admin", "admin", []string{"page_size", "last"}, nil, 200, listPage[hubmesh.AuditEvent]{}},
	{"GET", "/api/v1/settings", "Cluster settings", "admin", "admin", nil, nil, 200, hubmesh.Settings{}},
	{"PATCH", "/api/v1/settings", "Change cluster settings", "admin", "admin", nil, map[string]string{"open_signup": "boolean"}, 200, hubmesh.Settings{}},
	{"POST", "/api/v1/keys/rotate", "Rotate the token signing key", "admin", "admin", nil, nil, 200, nil},
	{"GET", "/api/v1/openapi.json", "This document", "meta", "none", nil, nil, 200, nil},

	{"GET", "/api/v1/cluster/status", "Cluster status as this node sees it", "cluster", "none", nil, nil, 200, ClusterStatus{}},
	{"POST", "/api/v1/cluster/join-tokens", "Create a join token (site administrators)", "cluster", "admin", nil, map[string]string{"role": "string", "ttl": "string"}, 201, JoinToken{}},
	{"POST", "/api/v1/cluster/join", "Join the cluster with a join token (nodes)", "cluster", "none", nil, map[string]string{"token": "string", "member": "object"}, 200, JoinResponse{}},
	{"POST", "/api/v1/cluster/leave", "Take the answering node out of the cluster", "cluster", "admin", nil, nil, 204, nil},
	{"DELETE", "/api/v1/cluster/members/{id}", "Remove another node", "cluster", "admin", nil, nil, 204, nil},

	{"GET", "/v1/_ping", "Registry v1 ping (the docker daemon asks it before a search)", "search", "none", nil, nil, 200, nil},
	{"GET", "/v1/search", "Registry v1 search, as `docker search` reads it", "search", "none", []string{"q", "n", "page"}, nil, 200, v1Results{}},
}

// schemaOf describes t, adding named structs to defs.
func schemaOf(t reflect.Type, defs map[string]any) map[string]any {
	if t == reflect.TypeFor[time.Time]() {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := schemaOf(t.Elem(), defs)
		s["nullable"] = true
		return s
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t.Implements(reflect.TypeFor[interface{ MarshalText() ([]byte, error) }]()) {
			return map[string]any{"type": "string"}
		}
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), defs)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), defs)}
	case reflect.Struct:
		name := schemaName(t)
		if _, ok := defs[name]; !ok {
			defs[name] = nil // recursion guard
			props := map[string]any{}
			for i := range t.NumField() {
				f := t.Field(i)
				tag := f.Tag.Get("json")
				if !f.IsExported() || tag == "-" {
					continue
				}
				jn := strings.Split(tag, ",")[0]
				if jn == "" {
					jn = f.Name
				}
				props[jn] = schemaOf(f.Type, defs)
			}
			defs[name] = map[string]any{"type": "object", "properties": props}
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

var typeArgs = regexp.MustCompile(`[^A-Za-z0-9]+`)

// schemaName is the component name of a Go type: its name, generic
// arguments spelled in ("listPage[repoView]" -> "listPage_repoView").
func schemaName(t reflect.Type) string {
	n := t.Name()
	if i := strings.IndexByte(n, '['); i >= 0 {
		inner := n[i+1 : len(n)-1]
		if j := strings.LastIndexByte(inner, '.'); j >= 0 {
			inner = inner[j+1:]
		}
		n = n[:i] + "_" + inner
	}
	return strings.Trim(typeArgs.ReplaceAllString(n, "_"), "_")
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// buildOpenAPI renders the table.
func buildOpenAPI() ([]byte, error) {
	defs := map[string]any{}
	paths := map[string]map[string]any{}
	for _, op := range apiOps {
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range op.query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
		}
		resp := map[string]any{"description": http.StatusText(op.status)}
		if op.resp != nil {
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(op.resp), defs)}}
		}
		o := map[string]any{
			"summary": op.summary, "tags": []string{op.tag},
			"responses": map[string]any{
				strconv.Itoa(op.status): resp,
				"default":               map[string]any{"$ref": "#/components/responses/Error"},
			},
		}
		switch op.auth {
		case "none":
			o["security"] = []any{map[string]any{}, map[string]any{"bearer": []any{}}, map[string]any{"basic": []any{}}}
		case "admin":
			o["description"] = "Site administrators only."
		}
		if params != nil {
			o["parameters"] = params
		}
		if op.body != nil {
			props := map[string]any{}
			for k, v := range op.body {
				props[k] = map[string]any{"type": v}
			}
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object", "properties": props}}}}
		}
		if paths[op.path] == nil {
			paths[op.path] = map[string]any{}
		}
		paths[op.path][strings.ToLower(op.method)] = o
	}
	defs["Error"] = map[string]any{"type": "object", "properties": map[string]any{"errors": map[string]any{"type": "array", "items": map[string]any{
		"type": "object", "properties": map[string]any{"code": map[string]any{"type": "string"}, "message": map[string]any{"type": "string"}, "detail": map[string]any{}}}}}}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title": "hubmesh Hub API", "version": "1",
			"description": "The REST API of a hubmesh node, modelled on Docker Hub's field names. Every node of a cluster answers alike. Credentials: Bearer (API session token from /api/v1/users/login, registry token, or personal access token) or Basic (password or access token). Errors: {\"errors\":[{\"code\",\"message\"}]}.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": defs,
			"responses": map[string]any{"Error": map[string]any{"description": "An error", "content": map[string]any{
				"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}},
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer"},
				"basic":  map[string]any{"type": "http", "scheme": "basic"},
			},
		},
		"security": []any{map[string]any{"bearer": []any{}}, map[string]any{"basic": []any{}}},
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func TestOpenAPIDocument(t *testing.T) {
	doc, err := buildOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *updateOpenAPI {
		if err := os.WriteFile("openapi.json", doc, 0o644); err != nil {
			t.Fatal(err)
		}
		openAPIDocument = doc
	}
	if !bytes.Equal(doc, openAPIDocument) {
		t.Fatal("openapi.json is out of date: go test ./registryapi -run TestOpenAPIDocument -update-openapi")
	}
	var parsed struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &parsed); err != nil || parsed.OpenAPI != "3.0.3" {
		t.Fatalf("document: %v %q", err, parsed.OpenAPI)
	}

	// Every live route of the Hub is documented (the cluster routes are
	// in the table by hand: its mux keeps no list).
	e := newHubEnv(t)
	hub, err := NewHub(HubConfig{Auth: e.a, Accounts: e.acc, Listings: e.reg, Logger: e.a.log})
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ms := range parsed.Paths {
		for m := range ms {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	for _, pattern := range hub.order {
		for method := range hub.paths[pattern] {
			p := strings.ReplaceAll(pattern, "...}", "}")
			if !documented[method+" "+p] {
				t.Errorf("route %s %s is not in openapi.json", method, pattern)
			}
		}
	}

	// Every documented operation answers: not the 404 of an unknown path
	// and not a 405.
	mux := http.NewServeMux()
	cl, err := NewClusterHandler(&fakeCluster{}, e.a.log, WithAdminAuth(e.a))
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", e.h)
	mux.Handle("/api/v1/cluster/", cl)
	e.h, e.srv = mux, httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	admin := basic("admin", testPassword)
	fill := strings.NewReplacer("{name}", "admin", "{ns}", "admin", "{org}", "acme", "{team}", "owners", "{user}", "admin", "{repo}", "acme/app", "{uuid}", "x", "{id}", "n1")
	for _, op := range apiOps {
		if op.path == "/api/v1/cluster/leave" || (op.method == "DELETE" && strings.HasPrefix(op.path, "/api/v1/users/")) {
			continue // would end the test's own node or admin
		}
		path := fill.Replace(op.path)
		r := e.do(op.method, path, admin, []byte("{}"), "Content-Type", "application/json")
		if r.status == http.StatusMethodNotAllowed || strings.Contains(string(r.body), "no such API endpoint") {
			t.Errorf("%s %s: %d %s", op.method, path, r.status, truncate(string(r.body), 200))
		}
	}
}
