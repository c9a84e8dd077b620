// Which Node internals this process uses, found once at load (llhttp.ts, tcp-wrap.ts): logged at start as
// `node internals`, shown by `lb status`, exported as lb_node_internal{name,mode}. Workers inherit the
// primary's Node and environment, so the primary's report is theirs.

import { httpParserCapability } from './llhttp.js';
import { FALLBACK_SWITCH, type Capability, type InternalName } from './switch.js';
import { tcpWrapCapability } from './tcp-wrap.js';

export interface InternalReport extends Capability {
  name: InternalName;
}

export function nodeInternals(): InternalReport[] {
  return [
    { name: 'http_parser', ...httpParserCapability },
    { name: 'tcp_wrap', ...tcpWrapCapability },
  ];
}

/** The fields of the `node internals` log line. */
export function nodeInternalsLog(): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const r of nodeInternals()) fields[r.name] = r.reason ? `${r.mode}: ${r.reason}` : r.mode;
  if (process.env.LB_NODE_FALLBACK !== undefined) fields.LB_NODE_FALLBACK = process.env.LB_NODE_FALLBACK;
  if (FALLBACK_SWITCH.unknown.length > 0) fields.ignored = FALLBACK_SWITCH.unknown;
  return fields;
}
