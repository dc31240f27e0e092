#pragma once
// Files that are either wholly old or wholly new: checkpoints, results and reports of long
// studies must never be seen half-written, and never replace a file their writer did not make.
#include <string>
#include <string_view>
#include <vector>

namespace nl::nn {

// A temporary name beside path that no other process or earlier run uses: pid, a per-process
// counter and the clock, ending in ".normlab-tmp" (which marks it as ours for cleanup).
std::string temp_name_for(const std::string& path);

// Writes the pieces, in order, to a new temporary file beside path (temp_name_for, opened with
// O_EXCL so no existing file is ever opened), fsyncs it and renames it over path. After a crash
// path holds the old or the new content; on an error the temporary is removed and nl::Error
// names the file and the system's reason.
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);
inline void write_file_atomic(const std::string& path, std::string_view content) {
  write_file_atomic(path, std::vector<std::string_view>{content});
}

// The same, but path must not exist: the complete file appears under its name at once (a hard
// link of the temporary, which fails rather than replace anything) and false is returned, with
// nothing written, when path already exists. For files that others poll for (nl::dist's
// rendezvous), which must never be read half-written nor replace another job's.
bool create_file_atomic(const std::string& path, std::string_view content);

}  // namespace nl::nn
