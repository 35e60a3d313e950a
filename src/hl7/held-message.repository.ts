import type { Db } from '../db/database.js';
import { MessageStatus } from '../states.js';

/** The stored message's status; undefined when there is no such message. */
export async function messageStatus(db: Db, id: string): Promise<MessageStatus | undefined> {
  return (await db.selectFrom('hl7_messages').select(['status']).where('id', '=', id).executeTakeFirst())?.status;
}

/** Compare-and-set: a held message becomes dismissed. False: it was not (or no longer) held, nothing written. */
export async function dismissHeldMessage(db: Db, id: string, now: string): Promise<boolean> {
  const moved = await db
    .updateTable('hl7_messages')
    .set({ status: MessageStatus.dismissed, updated_at: now })
    .where('id', '=', id)
    .where('status', '=', MessageStatus.held)
    .executeTakeFirst();
  return Number(moved.numUpdatedRows) === 1;
}
