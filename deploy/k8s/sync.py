"""Write the generated files the Kubernetes Envoy mounts: its config and the descriptor set.

kustomize only reads files below the kustomization (`kubectl apply -k` has no way to lift that
restriction), so deploy/k8s/base/envoy/ holds committed copies; a test fails when they are stale.

- envoy.json: `deploy.envoy.config.render_config(**K8S)`: listens on all addresses, the gateway
  is the headless Service `gateway` (DNS: one address per ready pod, so Envoy balances over the
  replicas), traces go to the `otel-collector` Service.
- overlays/prod/envoy/envoy.json: the same config with production's head sampling
  (PROD_TRACE_SAMPLING_PERCENT of the requests that bring no sampled traceparent), merged over
  the base's key by the prod overlay.
- console/: the web console's files (deploy/console/), a ConfigMap of their own (envoy-console,
  about 80 KB) that Envoy reads at CONSOLE_MOUNT.
- pixmesh.pb: deploy/envoy/pixmesh.pb without source code info (comments and line numbers, which
  the transcoder never reads) and without the buf.validate rules (Envoy does not check them; the
  services do, and buf/validate/validate.proto alone is 55 KB), so the generated ConfigMap stays
  under the 256 KiB that client-side `kubectl apply` can store in its last-applied annotation.

    python -m deploy.k8s.sync
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

import pixmesh._buf_validate  # noqa: F401  (the buf.validate options parse as extensions)
from deploy.envoy import console
from deploy.envoy.config import COMPOSE, DEFAULT_DESCRIPTOR, render_config

ENVOY_DIR = Path(__file__).parent / "base" / "envoy"
PROD_ENVOY_DIR = Path(__file__).parent / "overlays" / "prod" / "envoy"
# Production's share of traced requests. Tracing is the largest single cost of the mesh (issue
# 10: a cheap job's server CPU -31% untraced); a client that sends a sampled traceparent is always
# traced. The services' own roots (OTEL_TRACES_SAMPLER_ARG in overlays/prod) use the same ratio.
PROD_TRACE_SAMPLING_PERCENT = 10.0
# Where the Deployment mounts the ConfigMap (deploy/k8s/base/envoy.yaml).
MOUNT = "/etc/envoy"
CONSOLE_MOUNT = "/etc/envoy-console"

# The compose flavour (same ports, listening on all addresses) with Kubernetes' names. The admin
# port serves /ready (the readiness probe) and /stats/prometheus; a NetworkPolicy lets only the
# monitoring namespace reach it.
K8S: dict[str, Any] = {
    **COMPOSE,
    "descriptor_path": f"{MOUNT}/pixmesh.pb",
    "gateway_host": "gateway",
    "otlp_host": "otel-collector",
    "console_dir": CONSOLE_MOUNT,
}


def envoy_config() -> str:
    return render_config(**K8S)


def prod_envoy_config() -> str:
    return render_config(**K8S, trace_sampling_percent=PROD_TRACE_SAMPLING_PERCENT)


def stripped_descriptor(source: str | Path = DEFAULT_DESCRIPTOR) -> bytes:
    """The descriptor set without source code info and buf.validate rules, serialized
    deterministically."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(source).read_bytes())
    files = [f for f in fds.file if f.name != _VALIDATE]
    for f in files:
        f.ClearField("source_code_info")
        if _VALIDATE in f.dependency:
            kept = [d for d in f.dependency if d != _VALIDATE]
            del f.dependency[:]
            f.dependency.extend(kept)
            _drop_rules(f.message_type)
    del fds.file[:]
    fds.file.extend(files)
    return fds.SerializeToString(deterministic=True)


_VALIDATE = "buf/validate/validate.proto"


def _drop_rules(messages: Any) -> None:
    """Remove the buf.validate options of `messages` (DescriptorProtos), their fields, oneofs and
    nested messages; options left empty go too."""
    for message in messages:
        owners = [message, *message.field, *message.oneof_decl]
        for owner in owners:
            if not owner.HasField("options"):
                continue
            options = owner.options
            for field, _ in options.ListFields():
                if field.is_extension and field.full_name.startswith("buf.validate."):
                    options.ClearExtension(field)
            if not options.ListFields():
                owner.ClearField("options")
        _drop_rules(message.nested_type)


def write(out_dir: Path = ENVOY_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    config, descriptor = out_dir / "envoy.json", out_dir / "pixmesh.pb"
    config.write_text(envoy_config())
    descriptor.write_bytes(stripped_descriptor())
    # ConfigMap keys are file names: the console folder is flat.
    files = out_dir / "console"
    files.mkdir(exist_ok=True)
    names = {a.name for a in console.assets()}
    for old in files.iterdir():
        if old.name not in names:
            old.unlink()
    copies = []
    for name in sorted(names):
        copy = files / name
        copy.write_bytes((console.CONSOLE_SOURCE / name).read_bytes())
        copies.append(copy)
    return [config, descriptor, *copies]


def write_prod(out_dir: Path = PROD_ENVOY_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "envoy.json"
    config.write_text(prod_envoy_config())
    return config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.k8s.sync", description=__doc__)
    p.add_argument("--out-dir", type=Path, default=ENVOY_DIR)
    a = p.parse_args(argv)
    for path in write(a.out_dir):
        print(path)
    if a.out_dir == ENVOY_DIR:  # the committed tree, not a scratch folder
        print(write_prod())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
