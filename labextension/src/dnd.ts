/**
 * Drag a cluster card into a notebook: Lumino drag and drop with the
 * notebook's own cell MIME type, so the notebook inserts a code cell where
 * it is dropped (and a text/plain copy for editors and consoles).
 */
import { Drag } from '@lumino/dragdrop';
import { MimeData } from '@lumino/coreutils';

import { Cluster } from './api';
import { clientCode } from './format';

export const JUPYTER_CELL_MIME = 'application/vnd.jupyter.cells';
const DRAG_THRESHOLD = 5;

/**
 * Arm a drag from a pointer-down on a card: the drag starts once the pointer
 * moves a few pixels with the button held, so clicks stay clicks.
 */
export function armClusterDrag(
  event: { clientX: number; clientY: number; button: number; target: EventTarget | null },
  cluster: Cluster,
  source: unknown
): void {
  if (event.button !== 0 || !cluster.scheduler_address) {
    return;
  }
  const target = event.target as HTMLElement | null;
  if (target?.closest('button, input, select, textarea, a, pre')) {
    return;
  }
  const startX = event.clientX;
  const startY = event.clientY;
  const cleanup = () => {
    document.removeEventListener('pointermove', onMove, true);
    document.removeEventListener('pointerup', cleanup, true);
  };
  const onMove = (move: PointerEvent) => {
    if (
      Math.abs(move.clientX - startX) < DRAG_THRESHOLD &&
      Math.abs(move.clientY - startY) < DRAG_THRESHOLD
    ) {
      return;
    }
    cleanup();
    void startClusterDrag(cluster, source, move.clientX, move.clientY);
  };
  document.addEventListener('pointermove', onMove, true);
  document.addEventListener('pointerup', cleanup, true);
}

/** Start the Lumino drag carrying one code cell. */
export function startClusterDrag(
  cluster: Cluster,
  source: unknown,
  clientX: number,
  clientY: number
): Promise<Drag.DropAction> {
  const source_code = clientCode(cluster);
  const mimeData = new MimeData();
  mimeData.setData(JUPYTER_CELL_MIME, [
    { cell_type: 'code', source: source_code, metadata: {} }
  ]);
  mimeData.setData('text/plain', source_code);

  const dragImage = document.createElement('div');
  dragImage.className = 'jp-dragImage dask-kube-dragImage';
  // the line that creates the client, whichever backend's code it is
  dragImage.textContent =
    source_code.split('\n').find(line => line.startsWith('client =')) ??
    source_code;

  const drag = new Drag({
    mimeData,
    dragImage,
    proposedAction: 'copy',
    supportedActions: 'copy',
    source
  });
  return drag.start(clientX, clientY);
}
