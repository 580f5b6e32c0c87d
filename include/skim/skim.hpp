#pragma once
// The one header users include.
#include "skim/answer.hpp"
#include "skim/calibrate.hpp"
#include "skim/data.hpp"
#include "skim/engine.hpp"
#include "skim/error.hpp"
#include "skim/options.hpp"
#include "skim/router.hpp"
