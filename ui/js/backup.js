// Settings tab, "Backup and restore": two buttons over the backend's
// back_up / restore_backup commands (all the work is in Rust:
// src-tauri/src/desktop/backup.rs); this only shows their answers.

import { invoke, errorText } from './backend.js';
import { byId, setText } from './dom.js';

export function createBackup() {
  const backUpButton = byId('backup-now');
  const restoreButton = byId('restore-backup');
  const pathInput = byId('restore-path');
  const message = byId('backup-message');

  function show(kind, text) {
    message.dataset.kind = kind;
    setText(message, text);
  }

  async function run(button, command, args) {
    backUpButton.disabled = true;
    restoreButton.disabled = true;
    show('', button === backUpButton ? 'Backing up…' : 'Restoring…');
    try {
      const outcome = await invoke(command, args);
      show('ok', outcome.message);
      return outcome;
    } catch (err) {
      show('error', errorText(err));
      return null;
    } finally {
      backUpButton.disabled = false;
      restoreButton.disabled = false;
    }
  }

  backUpButton.addEventListener('click', async () => {
    const outcome = await run(backUpButton, 'back_up');
    // Ready to restore the file just written (e.g. on another machine).
    if (outcome && !pathInput.value.trim()) pathInput.value = outcome.path;
  });
  restoreButton.addEventListener('click', () => run(restoreButton, 'restore_backup', { path: pathInput.value }));
}
