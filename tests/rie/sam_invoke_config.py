"""Run with .venv-tools/bin/python: what `sam local invoke` would give one function's container, as JSON.

SAM CLI's own classes compute it (no copy of their rules): the function as SamFunctionProvider reads it
from the built template, the environment from LocalLambdaRunner (template variables, `--env-vars`
overrides, shell values, credentials), and the container entry point from LambdaContainer (including
the one `-d` / `--debug-port` switches to). Usage:

    sam_invoke_config.py TEMPLATE FUNCTION [--env-vars FILE] [--debug-port N] [--parameter-overrides K=V ...]
        [--docker-network NAME] [--add-host NAME:IP ...]

The network comes from SAM's Container.create too: the Docker API arguments it would send (network
mode, extra hosts, networks it connects) are recorded by a stand-in Docker client instead of sent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main() -> int:
    """Print {"env", "entrypoint", "handler", "runtime", "code_dir", "layers", "timeout", "memory"}."""
    parser = argparse.ArgumentParser()
    parser.add_argument("template")
    parser.add_argument("function")
    parser.add_argument("--env-vars")
    parser.add_argument("--debug-port", type=int)
    parser.add_argument("--parameter-overrides", nargs="*", default=[])
    parser.add_argument("--docker-network")
    parser.add_argument("--add-host", action="append", default=[])
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # SAM warns about Docker and telemetry; only the JSON matters here

    from samcli.commands.local.cli_common.invoke_context import InvokeContext
    from samcli.commands.local.lib.debug_context import DebugContext
    from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
    from samcli.local.docker.lambda_container import LambdaContainer

    template = os.path.abspath(args.template)
    overrides = dict(item.split("=", 1) for item in args.parameter_overrides)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    stacks, _ = SamLocalStackProvider.get_stacks(
        template, parameter_overrides=overrides, global_parameter_overrides={"AWS::Region": region}
    )
    provider = SamFunctionProvider(stacks)
    function = provider.get(args.function)
    if function is None:
        print(f"no function {args.function} in {template}", file=sys.stderr)
        return 2
    debug = DebugContext(debug_ports=(args.debug_port,), debug_args=None) if args.debug_port else None
    cwd = os.path.dirname(template)  # InvokeContext.get_cwd(): code paths are relative to the template
    runner = LocalLambdaRunner(
        local_runtime=None,  # type: ignore[arg-type]  # only the configuration is asked for, no container
        function_provider=provider,
        cwd=cwd,
        real_path=cwd,
        aws_region=region,
        env_vars_values=InvokeContext._get_env_vars_value(args.env_vars) or {},
        debug_context=debug,
    )
    config = runner.get_invoke_config(function)
    entrypoint, debug_env = LambdaContainer._get_debug_settings(config.runtime, debug)
    env = {**config.env_vars.resolve(), **debug_env}  # LambdaContainer merges them the same way
    doc = {
        "env": env,
        "entrypoint": entrypoint,
        "handler": config.handler,
        "runtime": config.runtime,
        "architecture": config.architecture,
        "code_dir": config.code_abs_path,
        "layers": [os.path.join(cwd, layer.codeuri) for layer in config.layers],
        "timeout": config.timeout,
        "memory": config.memory,
        "network": container_network(args.docker_network, args.add_host, config.code_abs_path, env, config.memory),
    }
    print(json.dumps(doc))
    return 0


class _RecordingDocker:
    """The two Docker API calls Container.create makes, recorded instead of sent."""

    def __init__(self) -> None:
        self.create_kwargs: dict[str, object] = {}
        self.connected: list[str] = []
        self.containers = self.networks = self

    def create(self, image: str, **kwargs: object) -> object:
        self.create_kwargs = kwargs
        return type("Created", (), {"id": "recorded"})()

    def get(self, network: str) -> object:
        return type("Network", (), {"connect": lambda _self, _id: self.connected.append(network)})()


def container_network(
    docker_network: str | None, add_hosts: list[str], code_dir: str, env: dict[str, str], memory: int
) -> dict[str, object]:
    """{"mode", "extra_hosts", "connected", "mem_limit"}: what `sam local invoke` asks Docker for.

    ContainerManager.run sets `network_id` from --docker-network and calls create(); --add-host values
    go through SAM's own option type.
    """
    import click
    from samcli.cli.types import DockerAdditionalHostType
    from samcli.local.docker.container import Container, ContainerContext

    option = click.Option(["--add-host"])
    extra_hosts: dict[str, str] = {}
    for value in add_hosts:
        extra_hosts.update(DockerAdditionalHostType().convert(value, option, None))
    docker = _RecordingDocker()
    container = Container(
        "image",
        [],
        "/var/task",
        code_dir,
        memory_limit_mb=memory,
        env_vars=env,
        docker_client=docker,
        extra_hosts=extra_hosts or None,
    )
    container.network_id = docker_network
    container.create(ContainerContext.INVOKE)
    kwargs = docker.create_kwargs
    return {
        "mode": kwargs.get("network_mode") or "bridge",  # Docker's default: the container's own namespace
        "extra_hosts": kwargs.get("extra_hosts") or {},
        "connected": docker.connected,
        "mem_limit": kwargs.get("mem_limit"),
    }


if __name__ == "__main__":
    sys.exit(main())
