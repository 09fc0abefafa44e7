/** What an edge thread needs of the cluster (../edge/handler.ts): built once per thread when cluster.enabled. */
import type { ResidentError } from '../errors.ts';
import type { ForwardAuth } from './forward-auth.ts';
import type { Forwarder } from './forward.ts';

export interface ClusterEdge {
  forwarder: Forwarder;
  auth: ForwardAuth;
  /** False once this node's lease may have run out: its answers for sessions are withheld (503). */
  serving(): boolean;
  /** The routing cookie's Set-Cookie value: the node that holds the session, for a balancer. */
  routingCookie(secure: boolean): string;
  /** Counts one forwarded request. */
  forwarded(): void;
  /** Logs a forward the owner did not answer: a warning per owner and minute, the rest at debug. */
  forwardFailed(owner: string, error: ResidentError): void;
}
