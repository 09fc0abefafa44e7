/**
 * The creation of a new session: live and unproven, its context born with its first request,
 * or the error that refuses it when its source's budget or the cap leaves no room. Claimed
 * before it takes its room, so the room taken and the context counted happen in one step. The
 * source's budget is judged before the cap (a refused source evicts nobody) and again with no
 * await left.
 */
import { newSessionId } from '../contexts/ids.ts';
import { ResidentError, isResidentError } from '../errors.ts';
import { hashId } from '../id-hash.ts';
import { contextInit } from './context-init.ts';
import { newEntry, type SessionEntry } from './directory.ts';
import { mustBeOurs } from './ownership.ts';
import type { Rooms } from './rooms.ts';

export async function createSession(rooms: Rooms, clientIp: string): Promise<SessionEntry | ResidentError> {
  const source = rooms.policy.sourceOf(clientIp);
  const others = rooms.sources.begin(source);
  try {
    return await create(rooms, clientIp, source, others);
  } finally {
    rooms.sources.end(source);
  }
}

async function create(rooms: Rooms, clientIp: string, source: string, sourceUnderWay: boolean): Promise<SessionEntry | ResidentError> {
  const { directory, capacity, clock, counters, log, ownership, sources, policy } = rooms;
  // Contexts still leaving (onSessionSuspend running) no longer count against the cap but are
  // still in memory: a flood whose hook is slow would otherwise hold any number of them.
  if (capacity.leavingFull()) return new ResidentError('RESIDENT_ERR_CAPACITY');
  const tooMany = sources.makeRoom(source);
  if (tooMany) return tooMany;
  const id = newSessionId();
  const now = clock.now();
  const entry = newEntry({ id, clientIp, source, proven: false, createdAt: Date.now(), startedAt: now, userId: null, lastActive: now });
  try {
    // In a cluster its first record names this node as its owner, so that a request that
    // reaches another node finds it (one store write; nothing on one node).
    mustBeOurs(await ownership.claim(id, () => policy.record(entry, null)));
  } catch (error) {
    // A cluster node without its lease says so (503 RESIDENT_ERR_NO_LEASE); a store failure is logged.
    if (isResidentError(error, 'RESIDENT_ERR_NO_LEASE')) return error;
    log.error({ event: 'store-error', err: error }, 'cannot record a new session in the store');
    return new ResidentError('RESIDENT_ERR_STORE_FAILED', undefined, { cause: error });
  }
  const refused = await capacity.makeRoom(source, sourceUnderWay);
  if (refused) {
    void ownership.release(id);
    return refused;
  }
  const tooManyNow = sources.makeRoom(source);
  if (tooManyNow) {
    capacity.unplace();
    void ownership.release(id);
    return tooManyNow;
  }
  entry.init = contextInit(entry, false);
  directory.addLive(entry);
  capacity.placed();
  counters.created++;
  // At debug: a cookieless flood makes one per request.
  log.debug({ event: 'created', session: hashId(entry.id), clientIp }, 'session created');
  return entry;
}
