#!/usr/bin/env python3
"""Prints a crate's public API, one line per item, from rustdoc's JSON output.

Usage: public_api.py CRATE.json > api/CRATE.txt

Each line names an item by its public path with its kind and signature: functions and methods
with their parameter and return types, struct fields, enum variants, trait items, trait
implementations of local types. Sorted, so a diff shows exactly what a change added, removed
or altered. Private items and items hidden with #[doc(hidden)] are left out.
"""
import json
import re
import sys

d = json.load(open(sys.argv[1]))
index = d["index"]
paths = d["paths"]


def item(i):
    return index.get(str(i))


def name_of_path(i, fallback):
    p = paths.get(str(i))
    return "::".join(p["path"]) if p else fallback


def generic_args(a):
    if not a:
        return ""
    if "angle_bracketed" in a:
        ab = a["angle_bracketed"]
        parts = []
        for x in ab.get("args", []):
            if "type" in x:
                parts.append(ty(x["type"]))
            elif "lifetime" in x:
                parts.append(x["lifetime"])
            elif "const" in x:
                parts.append(str(x["const"].get("expr", "_")))
            else:
                parts.append("_")
        for c in ab.get("constraints", []):
            b = c.get("binding", {})
            if "equality" in b:
                parts.append(f"{c['name']} = {term(b['equality'])}")
            else:
                parts.append(f"{c['name']}: {bounds(b.get('constraint', []))}")
        return "<" + ", ".join(parts) + ">" if parts else ""
    if "parenthesized" in a:
        p = a["parenthesized"]
        out = "(" + ", ".join(ty(t) for t in p.get("inputs", [])) + ")"
        if p.get("output"):
            out += " -> " + ty(p["output"])
        return out
    return ""


def term(t):
    return ty(t["type"]) if "type" in t else str(t.get("constant", "_"))


def path_str(p):
    return name_of_path(p.get("id"), p.get("path", "?")) + generic_args(p.get("args"))


def bounds(bs):
    out = []
    for b in bs:
        if "trait_bound" in b:
            tb = b["trait_bound"]
            mod = {"maybe": "?", "maybe_const": "~const "}.get(tb.get("modifier"), "")
            out.append(mod + path_str(tb["trait"]))
        elif "outlives" in b:
            out.append(b["outlives"])
        elif "use" in b:
            out.append("use<..>")
    return " + ".join(out)


def ty(t):
    if t is None:
        return "()"
    k, v = next(iter(t.items()))
    if k == "resolved_path":
        return path_str(v)
    if k == "generic":
        return v
    if k == "primitive":
        return v
    if k == "borrowed_ref":
        lt = (v.get("lifetime") or "") + " " if v.get("lifetime") else ""
        return "&" + lt + ("mut " if v.get("is_mutable") else "") + ty(v["type"])
    if k == "raw_pointer":
        return ("*mut " if v.get("is_mutable") else "*const ") + ty(v["type"])
    if k == "tuple":
        return "(" + ", ".join(ty(x) for x in v) + ")"
    if k == "slice":
        return "[" + ty(v) + "]"
    if k == "array":
        return "[" + ty(v["type"]) + "; " + str(v["len"]) + "]"
    if k == "impl_trait":
        return "impl " + bounds(v)
    if k == "dyn_trait":
        parts = [path_str(p["trait"]) for p in v.get("traits", [])]
        if v.get("lifetime"):
            parts.append(v["lifetime"])
        return "dyn " + " + ".join(parts)
    if k == "qualified_path":
        tr = path_str(v["trait"]) if v.get("trait") else "_"
        return f"<{ty(v['self_type'])} as {tr}>::{v['name']}"
    if k == "function_pointer":
        decl = v["sig"]
        return "fn(" + ", ".join(ty(x[1]) for x in decl["inputs"]) + ")" + ret(decl.get("output"))
    if k == "infer":
        return "_"
    return k


def ret(o):
    return "" if o is None else " -> " + ty(o)


def generics(g):
    params, wh = generic_parts(g)
    return params + wh


def generic_parts(g):
    params = []
    for p in g.get("params", []):
        kind = p["kind"]
        if "lifetime" in kind:
            params.append(p["name"])
        elif "type" in kind:
            if kind["type"].get("is_synthetic"):
                continue
            b = bounds(kind["type"].get("bounds", []))
            params.append(p["name"] + (": " + b if b else ""))
        elif "const" in kind:
            params.append("const " + p["name"] + ": " + ty(kind["const"]["type"]))
    out = "<" + ", ".join(params) + ">" if params else ""
    wh = []
    for w in g.get("where_predicates", []):
        if "bound_predicate" in w:
            bp = w["bound_predicate"]
            wh.append(ty(bp["type"]) + ": " + bounds(bp.get("bounds", [])))
    return out, (" where " + ", ".join(wh) if wh else "")


ASYNC_TRAIT = re.compile(
    r" -> core::pin::Pin<alloc::boxed::Box<dyn core::future::future::Future<Output = (.*)> \+ core::marker::Send \+ 'async_trait>> where Self: 'async_trait$"
)
LIFETIMES = re.compile(r"'life\d+, |, 'async_trait|'async_trait")
REF_LIFETIMES = re.compile(r"&'life\d+ ")


def self_arg(t):
    if "borrowed_ref" in t and t["borrowed_ref"]["type"] == {"generic": "Self"}:
        return "&mut self" if t["borrowed_ref"].get("is_mutable") else "&self"
    if t == {"generic": "Self"}:
        return "self"
    return "self: " + ty(t)


def fn_sig(name, f):
    h = f.get("header", {})
    q = ("const " if h.get("is_const") else "") + ("async " if h.get("is_async") else "") + ("unsafe " if h.get("is_unsafe") else "")
    sig = f["sig"]
    args = ", ".join(self_arg(t) if n == "self" else f"{n}: {ty(t)}" for n, t in sig["inputs"])
    params, wh = generic_parts(f.get("generics", {}))
    line = f"{q}fn {name}{params}({args}){ret(sig.get('output'))}{wh}"
    # An #[async_trait] method, as its users write it.
    m = ASYNC_TRAIT.search(line)
    if m:
        line = ASYNC_TRAIT.sub(r" -> \1", line)
        line = "async " + REF_LIFETIMES.sub("&", LIFETIMES.sub("", line)).replace("<>", "")
    return line


def hidden(it):
    for a in it.get("attrs", []):
        s = a if isinstance(a, str) else json.dumps(a)
        if "doc(hidden)" in s.replace(" ", "") or "hidden" == s:
            return True
    return False


def ne(it):
    """Marks #[non_exhaustive], which decides what users may construct and match."""
    return " #[non_exhaustive]" if "non_exhaustive" in json.dumps(it.get("attrs", [])) else ""


def public(it):
    return it.get("visibility") == "public"


out = set()
seen = set()


def walk(i, prefix):
    it = item(i)
    if it is None or hidden(it):
        return
    key = (i, prefix)
    if key in seen:
        return
    seen.add(key)
    k, v = next(iter(it["inner"].items()))
    name = it.get("name")
    path = f"{prefix}::{name}" if prefix and name else (name or prefix)
    if k == "module":
        out.add(f"mod {path}")
        for c in v["items"]:
            ci = item(c)
            if ci is not None and (public(ci) or next(iter(ci["inner"])) == "impl"):
                walk(c, path)
        return
    if k == "use":
        target = v.get("id")
        ti = item(target) if target is not None else None
        if ti is None:
            out.add(f"pub use {prefix}::{v['name']} = {v['source']}" + ("::*" if v.get("is_glob") else ""))
            return
        if v.get("is_glob"):
            tk, tv = next(iter(ti["inner"].items()))
            if tk == "module":
                for c in tv["items"]:
                    ci = item(c)
                    if ci is not None and public(ci):
                        walk(c, prefix)
            return
        # A re-export: the item under the re-exported name.
        renamed = dict(ti)
        renamed["name"] = v["name"]
        index[f"use:{i}"] = renamed
        walk(f"use:{i}", prefix)
        return
    if k == "function":
        out.add(f"{path}: {fn_sig(name, v)}")
    elif k == "struct":
        out.add(f"struct {path}{generics(v.get('generics', {}))}{ne(it)}")
        kind = v["kind"]
        fields = kind.get("plain", {}).get("fields", []) if isinstance(kind, dict) else []
        if isinstance(kind, dict) and "tuple" in kind:
            fields = [f for f in kind["tuple"] if f is not None]
        for f in fields:
            fi = item(f)
            if fi and public(fi) and not hidden(fi):
                out.add(f"struct {path} field {fi['name']}: {ty(fi['inner']['struct_field'])}")
        if isinstance(kind, dict) and kind.get("plain", {}).get("has_stripped_fields"):
            out.add(f"struct {path} has private fields")
        impls(path, v.get("impls", []))
    elif k == "enum":
        out.add(f"enum {path}{generics(v.get('generics', {}))}{ne(it)}")
        for var in v["variants"]:
            vi = item(var)
            if vi is None or hidden(vi):
                continue
            vk = vi["inner"]["variant"]["kind"]
            if vk == "plain":
                out.add(f"enum {path} variant {vi['name']}{ne(vi)}")
            elif "tuple" in vk:
                tys = [ty(item(f)["inner"]["struct_field"]) for f in vk["tuple"] if f is not None]
                out.add(f"enum {path} variant {vi['name']}({', '.join(tys)}){ne(vi)}")
            else:
                fs = [item(f) for f in vk["struct"]["fields"]]
                out.add(f"enum {path} variant {vi['name']} {{ " + ", ".join(f"{f['name']}: {ty(f['inner']['struct_field'])}" for f in fs) + " }" + ne(vi))
        impls(path, v.get("impls", []))
    elif k == "trait":
        sup = bounds(v.get("bounds", []))
        out.add(f"trait {path}{generics(v.get('generics', {}))}" + (f": {sup}" if sup else ""))
        for c in v["items"]:
            ci = item(c)
            if ci is None or hidden(ci):
                continue
            ck, cv = next(iter(ci["inner"].items()))
            if ck == "function":
                default = " (provided)" if cv.get("has_body") else ""
                out.add(f"trait {path} {fn_sig(ci['name'], cv)}{default}")
            elif ck == "assoc_type":
                out.add(f"trait {path} type {ci['name']}")
            elif ck == "assoc_const":
                out.add(f"trait {path} const {ci['name']}: {ty(cv['type'])}")
    elif k == "type_alias":
        out.add(f"type {path} = {ty(v['type'])}")
    elif k == "constant":
        out.add(f"const {path}: {ty(v['type'])}")
    elif k == "static":
        out.add(f"static {path}: {ty(v['type'])}")
    elif k in ("macro", "proc_macro"):
        out.add(f"macro {path}")
    elif k == "impl":
        pass
    else:
        out.add(f"{k} {path}")


def impls(path, ids):
    for i in ids:
        it = item(i)
        if it is None or hidden(it):
            continue
        v = it["inner"]["impl"]
        if v.get("is_synthetic") or v.get("blanket_impl") is not None:
            continue
        if v.get("trait") is not None:
            trait = path_str(v["trait"])
            if not trait.endswith("StructuralPartialEq"):
                # The implementing type as written (a `From<Local> for Foreign` is listed with
                # the local type, but implemented for the foreign one).
                target = ty(v["for"]) if v.get("for") else path
                if target.split("<")[0].split("::")[-1] == path.split("::")[-1]:
                    target = path
                out.add(f"impl {trait} for {target}")
            continue
        for c in v["items"]:
            ci = item(c)
            if ci is None or not public(ci) or hidden(ci):
                continue
            ck, cv = next(iter(ci["inner"].items()))
            if ck == "function":
                out.add(f"{path} {fn_sig(ci['name'], cv)}")
            elif ck == "assoc_const":
                out.add(f"{path} const {ci['name']}: {ty(cv['type'])}")


walk(d["root"], "")
for line in sorted(out):
    print(line)
