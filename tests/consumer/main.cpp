#include <iostream>
#include <skim/skim.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: consumer MODEL_DIR TEXT\n";
    return 2;
  }
  try {
    auto engine = skim::Engine::open(argv[1], skim::Options().threads(1));
    auto answer = engine->classify(argv[2]);
    std::cout << answer.label << '\t' << answer.score << '\n';
  } catch (const skim::Error& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
  return 0;
}
