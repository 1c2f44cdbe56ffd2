"""Read template.yaml (with CloudFormation tags) and resolve what the local stack needs from it."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
_SHORT_TAGS = {"Ref": "Ref", "Condition": "Condition", "GetAtt": "Fn::GetAtt"}


class TemplateError(Exception):
    """The template uses something the local stack cannot resolve."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` into `{"Ref": x}` and `!Sub s` into `{"Fn::Sub": s}`."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    key = _SHORT_TAGS.get(suffix, f"Fn::{suffix}")
    if key == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template."""
    with path.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506  # nosec B506 - a SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path} is not a CloudFormation template")
    return data


@dataclass
class Resolver:
    """Evaluates intrinsic functions against local values for parameters and resources."""

    template: dict[str, Any]
    parameters: dict[str, Any]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        raise TemplateError(f"cannot resolve Ref {name} locally")

    def condition(self, name: str) -> bool:
        """Evaluate a named condition."""
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def resolve(self, node: Any) -> Any:
        """Resolve intrinsics recursively; AWS::NoValue drops the key or item."""
        if isinstance(node, list):
            return [v for v in (self.resolve(i) for i in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _get_att(self, arg: list[str]) -> str:
        key = (arg[0], arg[1])
        if key not in self.attributes:
            raise TemplateError(f"cannot resolve GetAtt {arg[0]}.{arg[1]} locally")
        return self.attributes[key]

    def _sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(extra[name])
            if "." in name:
                return str(self._get_att(name.split(".", 1)))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", repl, text)


_NO_VALUE = object()
_INTRINSICS: dict[str, Any] = {
    "Ref": lambda r, a: r._ref(a),
    "Fn::GetAtt": lambda r, a: r._get_att(a),
    "Fn::Sub": lambda r, a: r._sub(a),
    "Fn::Join": lambda r, a: str(a[0]).join(str(x) for x in r.resolve(a[1])),
    "Fn::Select": lambda r, a: r.resolve(a[1])[int(r.resolve(a[0]))],
    "Fn::Split": lambda r, a: str(r.resolve(a[1])).split(a[0]),
    "Fn::If": lambda r, a: r.resolve(a[1] if r.condition(a[0]) else a[2]),
    "Fn::Equals": lambda r, a: r.resolve(a[0]) == r.resolve(a[1]),
    "Fn::Not": lambda r, a: not r.resolve(a[0]),
    "Fn::And": lambda r, a: all(r.resolve(x) for x in a),
    "Fn::Or": lambda r, a: any(r.resolve(x) for x in a),
    "Condition": lambda r, a: r.condition(a),
}


def parameter_defaults(template: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Template parameter defaults, with overrides and the pseudo parameters of the local stack."""
    params: dict[str, Any] = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    params.update(overrides or {})
    for name, spec in template.get("Parameters", {}).items():
        if spec.get("Type") == "CommaDelimitedList" and isinstance(params[name], str):
            params[name] = [item.strip() for item in params[name].split(",")]
    return params


@dataclass(frozen=True)
class UrlConfig:
    """A function's FunctionUrlConfig."""

    auth_type: str
    invoke_mode: str
    cors: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    """Everything needed to start one function the way Lambda does."""

    logical_id: str
    name: str
    code_dir: Path
    handler: str
    runtime: str
    timeout: int
    memory: int
    environment: dict[str, str]
    layer_dirs: tuple[Path, ...]
    url: UrlConfig | None


def _merge_globals(props: dict[str, Any], glob: dict[str, Any]) -> dict[str, Any]:
    """SAM Globals rules: maps merge, lists append, scalars are overridden by the resource."""
    merged = copy.deepcopy(glob)
    for key, value in props.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _merge_globals(value, base)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = value
    return merged


_LOCAL_PROPERTIES = {
    "CodeUri",
    "Handler",
    "Runtime",
    "Timeout",
    "MemorySize",
    "Environment",
    "Layers",
    "FunctionUrlConfig",
    "FunctionName",
}


def function_specs(template: dict[str, Any], resolver: Resolver, root: Path) -> dict[str, FunctionSpec]:
    """All serverless functions of the template, resolved."""
    resources = template["Resources"]
    glob = template.get("Globals", {}).get("Function", {})
    specs: dict[str, FunctionSpec] = {}
    for logical_id, res in resources.items():
        if res.get("Type") != FUNCTION_TYPE:
            continue
        merged = _merge_globals(res.get("Properties", {}), glob)
        # Only what starting the function needs is resolved (IAM policies, events... are not run locally).
        props = resolver.resolve({k: v for k, v in merged.items() if k in _LOCAL_PROPERTIES})
        layer_dirs = []
        for layer in props.get("Layers", []):
            layer_id = next((k for k, v in resolver.refs.items() if v == layer), None)
            if layer_id and resources[layer_id].get("Type") == LAYER_TYPE:
                layer_dirs.append((root / resources[layer_id]["Properties"]["ContentUri"]).resolve())
        url = props.get("FunctionUrlConfig")
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=resolver.refs[logical_id],
            code_dir=(root / props["CodeUri"]).resolve(),
            handler=props["Handler"],
            runtime=props.get("Runtime", "python3.12"),
            timeout=int(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            environment={k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()},
            layer_dirs=tuple(layer_dirs),
            url=UrlConfig(
                auth_type=url.get("AuthType", "AWS_IAM"),
                invoke_mode=url.get("InvokeMode", "BUFFERED"),
                cors=url.get("Cors", {}),
            )
            if url
            else None,
        )
    return specs
