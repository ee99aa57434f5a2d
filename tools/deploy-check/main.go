// Command deploy-check validates the example deployment files in deploy/ offline, with the
// libraries the tools themselves use (scripts/check-deploy.sh builds and runs it):
//
//	deploy-check envoy [-compose FILE] ENVOY.yaml
//	deploy-check compose COMPOSE.yaml
//
// envoy decodes a static bootstrap into Envoy's v3 API types (go-control-plane: unknown
// fields and unknown typed_config types are errors) and runs the API's validation rules
// (protoc-gen-validate), inside every typed_config too, as Envoy does when it loads a
// file. It then checks what the service needs of it: every route names a defined cluster,
// and every cluster a route sends gRPC to speaks HTTP/2 upstream. With -compose, every
// endpoint host must be a service of that compose file.
//
// compose loads the file with compose-go, the loader of Docker Compose itself: the
// compose-spec JSON schema, then consistency (depends_on, volumes and networks declared).
// A service that sets FINETUNE_DRAIN_SECONDS must give itself a longer stop_grace_period.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// The typed_config types deploy/envoy/envoy.yaml uses, registered for decoding. A new
	// filter or extension in that file needs its package here (the error names the type).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
)

const usage = "usage: deploy-check envoy [-compose FILE] ENVOY.yaml | deploy-check compose COMPOSE.yaml"

func main() {
	if len(os.Args) < 2 {
		fail(errors.New(usage))
	}
	switch os.Args[1] {
	case "envoy":
		flags := flag.NewFlagSet("envoy", flag.ExitOnError)
		compose := flags.String("compose", "", "compose file whose services the endpoints must name")
		_ = flags.Parse(os.Args[2:])
		if flags.NArg() != 1 {
			fail(errors.New(usage))
		}
		path := flags.Arg(0)
		if err := checkEnvoy(path, *compose); err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		fmt.Printf("%s: valid Envoy v3 bootstrap\n", path)
	case "compose":
		if len(os.Args) != 3 {
			fail(errors.New(usage))
		}
		path := os.Args[2]
		project, err := loadCompose(path)
		if err == nil {
			err = checkDrain(project)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		fmt.Printf("%s: valid compose file\n", path)
	default:
		fail(errors.New(usage))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "deploy-check:", err)
	os.Exit(1)
}

func checkEnvoy(path, composePath string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	json, err := yaml.YAMLToJSON(text)
	if err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	var bootstrap bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(json, &bootstrap); err != nil {
		return fmt.Errorf("not an Envoy v3 bootstrap: %w", err)
	}
	if err := validateTree(&bootstrap, "bootstrap"); err != nil {
		return err
	}
	if err := checkRoutes(&bootstrap); err != nil {
		return err
	}
	if composePath != "" {
		return checkEndpointsIn(&bootstrap, composePath)
	}
	return nil
}

// validateTree runs the protoc-gen-validate rules of msg. Generated validation stops at
// an Any, so each Any found in the tree is unpacked and validated in turn.
func validateTree(msg proto.Message, where string) error {
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	var walkErr error
	var walk func(m protoreflect.Message, at string)
	visit := func(m protoreflect.Message, at string) {
		if walkErr != nil {
			return
		}
		if packed, ok := m.Interface().(*anypb.Any); ok {
			inner, err := packed.UnmarshalNew()
			if err != nil {
				walkErr = fmt.Errorf("%s: %w", at, err)
				return
			}
			walkErr = validateTree(inner, at+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
			return
		}
		walk(m, at)
	}
	walk = func(m protoreflect.Message, at string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			name := at + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				list := v.List()
				for i := 0; i < list.Len(); i++ {
					visit(list.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i))
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message(), fmt.Sprintf("%s[%s]", name, k.String()))
					return walkErr == nil
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				visit(v.Message(), name)
			}
			return walkErr == nil
		})
	}
	walk(msg.ProtoReflect(), where)
	return walkErr
}

// checkRoutes: each route of each HTTP connection manager names a defined cluster, and a
// cluster that receives gRPC routes is configured for HTTP/2 upstream (gRPC over HTTP/1.1
// fails on every call, which no schema catches).
func checkRoutes(b *bootstrapv3.Bootstrap) error {
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, chain := range l.GetFilterChains() {
			for _, f := range chain.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						name := r.GetRoute().GetCluster()
						if name == "" {
							continue
						}
						c, ok := clusters[name]
						if !ok {
							return fmt.Errorf("listener %q, virtual host %q: route to cluster %q, which is not defined", l.GetName(), vh.GetName(), name)
						}
						if r.GetMatch().GetGrpc() != nil && !speaksHTTP2(c) {
							return fmt.Errorf("cluster %q receives gRPC but is not configured for HTTP/2 upstream (typed_extension_protocol_options: envoy.extensions.upstreams.http.v3.HttpProtocolOptions with http2_protocol_options)", name)
						}
					}
				}
			}
		}
	}
	return nil
}

func speaksHTTP2(c *clusterv3.Cluster) bool {
	raw, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	var opts upstreamhttpv3.HttpProtocolOptions
	if raw.UnmarshalTo(&opts) != nil {
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// checkEndpointsIn: every endpoint host of every cluster is a service of the compose file
// (a typo there would leave Envoy resolving a name nothing answers to).
func checkEndpointsIn(b *bootstrapv3.Bootstrap, composePath string) error {
	project, err := loadCompose(composePath)
	if err != nil {
		return fmt.Errorf("%s: %w", composePath, err)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, group := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range group.GetLbEndpoints() {
				host := e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
				if _, ok := project.Services[host]; !ok {
					return fmt.Errorf("cluster %q: endpoint %q is not a service of %s", c.GetName(), host, composePath)
				}
			}
		}
	}
	return nil
}

// checkDrain: Docker sends SIGKILL after stop_grace_period (default 10 s), so a replica's
// grace must outlast its drain (FINETUNE_DRAIN_SECONDS), or calls are cut mid-drain.
func checkDrain(project *types.Project) error {
	for name, service := range project.Services {
		value, ok := service.Environment["FINETUNE_DRAIN_SECONDS"]
		if !ok || value == nil {
			continue
		}
		drain, err := strconv.Atoi(*value)
		if err != nil {
			return fmt.Errorf("service %q: FINETUNE_DRAIN_SECONDS %q is not a whole number of seconds", name, *value)
		}
		grace := 10 * time.Second
		if service.StopGracePeriod != nil {
			grace = time.Duration(*service.StopGracePeriod)
		}
		if grace <= time.Duration(drain)*time.Second {
			return fmt.Errorf("service %q: stop_grace_period %s must exceed FINETUNE_DRAIN_SECONDS (%d s)", name, grace, drain)
		}
	}
	return nil
}

func loadCompose(path string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		// No variables from the caller's environment: the file must stand alone.
		Environment: types.Mapping{},
	}
	// The file's own `name:` wins over this fallback, as in `docker compose`.
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName(filepath.Base(filepath.Dir(abs)), false)
	})
}
